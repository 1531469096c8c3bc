//! What the pragmas do not tell about a table, read from its `CREATE TABLE` text: CHECK
//! constraints and COLLATE clauses. SQLite stores the statement as it was written (and edits
//! the text in place on ALTER TABLE), so the expressions come back verbatim.

use std::collections::BTreeMap;

/// The CHECK constraints (column and table ones, in text order) and the columns' collations.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TableText {
    pub checks: Vec<String>,
    /// Column name → collation (upper case), for columns that declare one.
    pub collations: BTreeMap<String, String>,
    /// Column name → (expression, stored) of generated columns.
    pub generated: BTreeMap<String, (String, bool)>,
    /// Whether a column says AUTOINCREMENT.
    pub autoincrement: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// A bare word: keyword, identifier or number.
    Word(String),
    /// A quoted identifier, unquoted.
    Quoted(String),
    /// A string literal (its text is never needed).
    Str,
    Open,
    Close,
    Comma,
    Other,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    start: usize,
    end: usize,
}

fn tokens(sql: &str) -> Vec<Token> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let kind = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i = (i + 2).min(bytes.len());
                continue;
            }
            b'\'' | b'"' | b'`' | b'[' => {
                let close = if c == b'[' { b']' } else { c };
                i += 1;
                let mut text = Vec::new();
                while i < bytes.len() {
                    if bytes[i] == close {
                        // A doubled quote is one quote character (not for [...]).
                        if close != b']' && bytes.get(i + 1) == Some(&close) {
                            text.push(close);
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    text.push(bytes[i]);
                    i += 1;
                }
                i = (i + 1).min(bytes.len());
                if c == b'\'' {
                    Kind::Str
                } else {
                    Kind::Quoted(String::from_utf8_lossy(&text).into_owned())
                }
            }
            b'(' => {
                i += 1;
                Kind::Open
            }
            b')' => {
                i += 1;
                Kind::Close
            }
            b',' => {
                i += 1;
                Kind::Comma
            }
            c if c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80 => {
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric()
                        || bytes[i] == b'_'
                        || bytes[i] == b'$'
                        || bytes[i] >= 0x80)
                {
                    i += 1;
                }
                Kind::Word(sql[start..i].to_string())
            }
            _ => {
                i += 1;
                Kind::Other
            }
        };
        out.push(Token {
            kind,
            start,
            end: i,
        });
    }
    out
}

fn is_word(token: &Token, word: &str) -> bool {
    matches!(&token.kind, Kind::Word(w) if w.eq_ignore_ascii_case(word))
}

fn name_of(token: &Token) -> Option<String> {
    match &token.kind {
        Kind::Word(w) | Kind::Quoted(w) => Some(w.clone()),
        _ => None,
    }
}

/// The index of the `Close` matching the `Open` at `open`.
fn matching(tokens: &[Token], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, t) in tokens.iter().enumerate().skip(open) {
        match t.kind {
            Kind::Open => depth += 1,
            Kind::Close => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// The words and quoted identifiers of an SQL expression (column names among them).
pub fn names(expr: &str) -> Vec<String> {
    tokens(expr).iter().filter_map(name_of).collect()
}

/// `expr` with column `from` renamed to `to` the way SQLite's RENAME COLUMN rewrites the text
/// it keeps: a quoted name stays quoted, a bare one stays bare when the new name allows it.
pub fn rename_in_expr(expr: &str, from: &str, to: &str) -> String {
    let mut out = String::new();
    let mut at = 0;
    for token in tokens(expr) {
        let (Kind::Word(name) | Kind::Quoted(name)) = &token.kind else {
            continue;
        };
        if !name.eq_ignore_ascii_case(from) {
            continue;
        }
        let bare_ok = to.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !to.starts_with(|c: char| c.is_ascii_digit());
        out.push_str(&expr[at..token.start]);
        if matches!(token.kind, Kind::Word(_)) && bare_ok {
            out.push_str(to);
        } else {
            out.push_str(&format!("\"{}\"", to.replace('"', "\"\"")));
        }
        at = token.end;
    }
    out.push_str(&expr[at..]);
    out
}

/// The items of a `CREATE INDEX` statement's parenthesised list, verbatim, and whether each is
/// a bare column name (then unquoted).
pub fn index_items(sql: &str) -> Option<Vec<(String, Option<String>)>> {
    let tokens = tokens(sql);
    let open = tokens.iter().position(|t| t.kind == Kind::Open)?;
    let close = matching(&tokens, open)?;
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut from = open + 1;
    for i in open + 1..=close {
        let end_of_item = i == close || (depth == 0 && tokens[i].kind == Kind::Comma);
        match tokens[i].kind {
            Kind::Open => depth += 1,
            Kind::Close if i != close => depth = depth.saturating_sub(1),
            _ => {}
        }
        if end_of_item {
            let part = &tokens[from..i];
            let (first, last) = (part.first()?, part.last()?);
            let text = sql[first.start..last.end].trim().to_string();
            let column = match part {
                [only] => name_of(only),
                _ => None,
            };
            items.push((text, column));
            from = i + 1;
        }
    }
    Some(items)
}

/// Reads the CHECKs and COLLATEs of a `CREATE TABLE` statement.
pub fn read_create_table(sql: &str) -> TableText {
    let tokens = tokens(sql);
    let mut text = TableText::default();
    let Some(open) = tokens.iter().position(|t| t.kind == Kind::Open) else {
        return text;
    };
    let Some(close) = matching(&tokens, open) else {
        return text;
    };
    // Definitions: the body split at commas outside parentheses.
    let mut definitions: Vec<&[Token]> = Vec::new();
    let mut depth = 0usize;
    let mut from = open + 1;
    for i in open + 1..close {
        match tokens[i].kind {
            Kind::Open => depth += 1,
            Kind::Close => depth = depth.saturating_sub(1),
            Kind::Comma if depth == 0 => {
                definitions.push(&tokens[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    definitions.push(&tokens[from..close]);
    for def in definitions {
        let Some(first) = def.first() else {
            continue;
        };
        let table_constraint = ["CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN"]
            .iter()
            .any(|w| is_word(first, w));
        let column = if table_constraint {
            None
        } else {
            name_of(first)
        };
        let mut i = usize::from(column.is_some());
        while i < def.len() {
            if def[i].kind == Kind::Open {
                // Skip nested parentheses (types such as VARCHAR(20), defaults, references).
                i = matching(def, i).map_or(def.len(), |c| c + 1);
                continue;
            }
            if is_word(&def[i], "CHECK")
                && def.get(i + 1).is_some_and(|t| t.kind == Kind::Open)
                && let Some(end) = matching(def, i + 1)
            {
                let expr = sql[def[i + 1].end..def[end].start].trim();
                text.checks.push(expr.to_string());
                i = end + 1;
                continue;
            }
            // `[GENERATED ALWAYS] AS (expr) [VIRTUAL|STORED]`
            if is_word(&def[i], "AS")
                && let Some(column) = &column
                && def.get(i + 1).is_some_and(|t| t.kind == Kind::Open)
                && let Some(end) = matching(def, i + 1)
            {
                let expr = sql[def[i + 1].end..def[end].start].trim();
                let stored = def.get(end + 1).is_some_and(|t| is_word(t, "STORED"));
                text.generated
                    .insert(column.clone(), (expr.to_string(), stored));
                i = end + 1;
                continue;
            }
            if is_word(&def[i], "AUTOINCREMENT") {
                text.autoincrement = true;
            }
            if is_word(&def[i], "COLLATE")
                && let (Some(column), Some(name)) = (&column, def.get(i + 1).and_then(name_of))
            {
                text.collations
                    .insert(column.clone(), name.to_ascii_uppercase());
                i += 2;
                continue;
            }
            i += 1;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_checks_and_collations_verbatim() {
        let text = read_create_table(
            "CREATE TABLE \"t\" (\n    \"a\" INTEGER CHECK (a > 0) NOT NULL,\n    \"Q r\" TEXT COLLATE nocase DEFAULT (')'),\n    b VARCHAR(20) COLLATE \"RTRIM\" CHECK (b <> 'x, (y)'),\n    PRIMARY KEY (\"a\"),\n    CONSTRAINT c CHECK (length(\"Q r\") < 10), -- a comment, (\n    CHECK ((a) IN (1, 2))\n)",
        );
        assert_eq!(
            text.checks,
            [
                "a > 0",
                "b <> 'x, (y)'",
                "length(\"Q r\") < 10",
                "(a) IN (1, 2)"
            ]
        );
        assert_eq!(text.collations["Q r"], "NOCASE");
        assert_eq!(text.collations["b"], "RTRIM");
        assert_eq!(text.collations.len(), 2);
    }

    #[test]
    fn odd_text_reads_as_nothing() {
        assert_eq!(read_create_table(""), TableText::default());
        assert_eq!(read_create_table("CREATE TABLE t (a"), TableText::default());
        let _ = read_create_table("CREATE TABLE t (a CHECK (");
    }
}

#[cfg(test)]
mod rename_tests {
    use super::rename_in_expr;

    #[test]
    fn renames_like_sqlite_keeping_quotes() {
        assert_eq!(
            rename_in_expr("a > 0 AND 'a' <> A", "a", "b"),
            "b > 0 AND 'a' <> b"
        );
        assert_eq!(
            rename_in_expr("\"the \"\"v\"\"\" >= 0", "the \"v\"", "reading"),
            "\"reading\" >= 0"
        );
        assert_eq!(
            rename_in_expr("x IS NULL", "x", "new name"),
            "\"new name\" IS NULL"
        );
        assert_eq!(rename_in_expr("xa + ax", "x", "y"), "xa + ax");
    }
}

#[cfg(test)]
mod index_tests {
    use super::index_items;

    #[test]
    fn index_items_are_verbatim_with_plain_columns_named() {
        let items = index_items(
            "CREATE UNIQUE INDEX \"i\" ON \"t\" (lower(\"a b\"), \"c\", substr(d, 1, 2)) WHERE x > 0",
        )
        .unwrap();
        assert_eq!(
            items,
            [
                ("lower(\"a b\")".to_string(), None),
                ("\"c\"".to_string(), Some("c".to_string())),
                ("substr(d, 1, 2)".to_string(), None),
            ]
        );
    }
}

/// What a piece of SQL from a model is spliced into, for [`check_fragment`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    /// One expression inside a statement (CHECK, DEFAULT, generated, index item or WHERE):
    /// no `;`, and no `,` outside parentheses (it would add a column or constraint).
    Expression,
    /// A view's SELECT or a trigger's `when`: one statement's part, no `;`.
    Clause,
    /// A trigger body between BEGIN and END: statements ending in `;`, but no END that is not
    /// a CASE's (it would end the trigger and let what follows run as statements of its own).
    TriggerBody,
}

/// Checks a model's SQL text before it is spliced into a migration: a fragment must stay
/// inside the statement beamdb writes around it. Strings and quoted names must be closed,
/// parentheses balanced (never closing one the fragment did not open), and comments are
/// refused (`--` would hide the `)` or `END` beamdb writes after it). The error says what and
/// where (a character offset into the text).
pub fn check_fragment(sql: &str, kind: Fragment) -> Result<(), String> {
    let chars: Vec<(usize, char)> = sql.char_indices().collect();
    let mut depth: i64 = 0;
    let mut cases: i64 = 0;
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        let next = chars.get(i + 1).map(|&(_, c)| c);
        match c {
            '\'' | '"' | '`' | '[' => {
                let close = if c == '[' { ']' } else { c };
                let mut j = i + 1;
                loop {
                    match chars.get(j) {
                        None => {
                            return Err(format!(
                                "the {} opened at character {} is never closed",
                                if c == '\'' { "string" } else { "quoted name" },
                                at + 1
                            ));
                        }
                        // A doubled quote is a quote inside (not for `[...]`).
                        Some(&(_, d)) if d == close => {
                            if close != ']' && chars.get(j + 1).map(|&(_, d)| d) == Some(close) {
                                j += 2;
                                continue;
                            }
                            break;
                        }
                        Some(_) => j += 1,
                    }
                }
                i = j + 1;
                continue;
            }
            '-' if next == Some('-') => {
                return Err(format!(
                    "it holds a comment (`--` at character {}), which would hide what beamdb writes after it; put the comment in the TOML (# ...)",
                    at + 1
                ));
            }
            '/' if next == Some('*') => {
                return Err(format!(
                    "it holds a comment (`/*` at character {}); put the comment in the TOML (# ...)",
                    at + 1
                ));
            }
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!(
                        "the `)` at character {} closes a parenthesis it did not open",
                        at + 1
                    ));
                }
            }
            ';' if kind != Fragment::TriggerBody => {
                return Err(format!(
                    "the `;` at character {} would end beamdb's statement and start another; write one {}",
                    at + 1,
                    if kind == Fragment::Expression {
                        "expression"
                    } else {
                        "statement's part, without `;`"
                    }
                ));
            }
            ',' if kind == Fragment::Expression && depth == 0 => {
                return Err(format!(
                    "the `,` at character {} is outside parentheses: it would add to the statement around the expression; write one expression",
                    at + 1
                ));
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut j = i;
                while chars
                    .get(j)
                    .is_some_and(|&(_, d)| d.is_alphanumeric() || d == '_' || d == '$')
                {
                    j += 1;
                }
                let word: String = chars[i..j].iter().map(|&(_, d)| d).collect();
                if kind == Fragment::TriggerBody {
                    if word.eq_ignore_ascii_case("case") {
                        cases += 1;
                    } else if word.eq_ignore_ascii_case("end") {
                        cases -= 1;
                        if cases < 0 {
                            return Err(format!(
                                "the END at character {} would end the trigger (beamdb writes its END); only a CASE's END belongs in the body",
                                at + 1
                            ));
                        }
                    }
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    if depth != 0 {
        return Err(format!(
            "{depth} parenthes{} never closed",
            if depth == 1 { "is is" } else { "es are" }
        ));
    }
    Ok(())
}

#[cfg(test)]
mod fragment_tests {
    use super::{Fragment, check_fragment};

    #[test]
    fn fragments_that_stay_inside_their_statement_pass() {
        for (sql, kind) in [
            ("value >= 0 AND label <> 'a;b--c)'", Fragment::Expression),
            ("\"odd \"\" name\" > 0", Fragment::Expression),
            ("coalesce(a, b, 'x,y')", Fragment::Expression),
            (
                "SELECT id, value FROM readings WHERE value > 0",
                Fragment::Clause,
            ),
            (
                "UPDATE r SET v = CASE WHEN NEW.v > 0 THEN 1 ELSE 0 END WHERE id = NEW.id; SELECT 1;",
                Fragment::TriggerBody,
            ),
        ] {
            assert_eq!(check_fragment(sql, kind), Ok(()), "{sql}");
        }
    }

    #[test]
    fn fragments_that_would_smuggle_a_statement_are_refused() {
        for (sql, kind, why) in [
            (
                "v >= 0); DROP TABLE runs; --",
                Fragment::Expression,
                "closes a parenthesis",
            ),
            ("v >= 0 -- positive", Fragment::Expression, "comment"),
            ("v /* x */ > 0", Fragment::Expression, "comment"),
            ("0, x INT", Fragment::Expression, "`,`"),
            ("v > 0; DROP TABLE runs", Fragment::Expression, "`;`"),
            ("SELECT 1; DROP TABLE runs", Fragment::Clause, "`;`"),
            ("'open", Fragment::Expression, "never closed"),
            ("\"open", Fragment::Expression, "never closed"),
            ("(v > 0", Fragment::Expression, "never closed"),
            (
                "SELECT 1; END; DROP TABLE runs; CREATE TRIGGER t2 AFTER INSERT ON runs BEGIN SELECT 1;",
                Fragment::TriggerBody,
                "END",
            ),
        ] {
            let err = check_fragment(sql, kind).unwrap_err();
            assert!(err.contains(why), "{sql}: {err}");
        }
    }
}
