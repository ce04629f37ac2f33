//! Listens on the TCP port given as its argument (7878 by default) and answers each connection with a
//! greeting naming the architecture it runs on, until it is stopped.
use std::io::Write;
use std::net::TcpListener;

fn main() {
    let port: u16 = match std::env::args().nth(1).unwrap_or_else(|| "7878".to_string()).parse() {
        Ok(port) => port,
        Err(error) => {
            eprintln!("hello-service: the port must be a number from 1 to 65535 ({error})");
            std::process::exit(2);
        }
    };
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("hello-service: cannot listen on port {port}: {error}");
            std::process::exit(1);
        }
    };
    println!("hello-service listening on port {port}");
    for mut connection in listener.incoming().flatten() {
        let _ = writeln!(connection, "Hello from hello-service on {}", std::env::consts::ARCH);
    }
}
