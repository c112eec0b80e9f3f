fn main() {
    println!("{}", api::VERSION);
}
