//! Greets its first argument and says which architecture it runs on.
fn main() {
    let name = std::env::args().nth(1).unwrap_or_else(|| "world".to_string());
    println!("Hello, {name}! from {}", std::env::consts::ARCH);
}
