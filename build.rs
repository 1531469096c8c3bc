// The built-in migrations are embedded with `include_str!`; a new file in migrations/ must
// rebuild the binary too, which include_str! alone does not notice.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=config/models");
}
