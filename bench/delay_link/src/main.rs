//! A link with latency, in user space: a TCP relay that holds every chunk for a fixed one-way delay in
//! each direction, without limiting throughput (a delay line, as netem's `delay` is). For kernels
//! without netem, run inside a board's network namespace (bench/fleet.py builds and starts it):
//!
//!     delay_link LISTEN_HOST LISTEN_PORT TARGET_PORT ROUND_TRIP_MS
//!
//! Prints `ready` once it listens; ends when its standard input does (its parent went away). Compiled,
//! not Python: the relay's own CPU shares the machine with the boards and crossboard it measures.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Chunks from `from` to `to`, each written `delay` after it arrived, in order; the end of `from`
/// becomes the end of `to`'s sending side, as late as the data before it.
fn carry(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (line, arrivals) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::spawn(move || {
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            let got = from.read(&mut buffer).unwrap_or(0);
            let arrived = Instant::now() + delay;
            if line.send((arrived, buffer[..got].to_vec())).is_err() || got == 0 {
                return;
            }
        }
    });
    for (due, chunk) in arrivals {
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        if chunk.is_empty() || to.write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn relay(client: TcpStream, target_port: u16, one_way: Duration) -> io::Result<()> {
    let server = TcpStream::connect(("127.0.0.1", target_port))?;
    for stream in [&client, &server] {
        stream.set_nodelay(true)?; // each chunk goes when it is due, not when Nagle lets it
    }
    let (client_copy, server_copy) = (client.try_clone()?, server.try_clone()?);
    thread::spawn(move || carry(client_copy, server_copy, one_way));
    thread::spawn(move || carry(server, client, one_way));
    Ok(())
}

fn main() {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let [host, listen_port, target_port, round_trip_ms] = arguments.as_slice() else {
        eprintln!("usage: delay_link LISTEN_HOST LISTEN_PORT TARGET_PORT ROUND_TRIP_MS");
        std::process::exit(2);
    };
    let (Ok(listen_port), Ok(target_port), Ok(round_trip_ms)) = (
        listen_port.parse::<u16>(),
        target_port.parse::<u16>(),
        round_trip_ms.parse::<f64>(),
    ) else {
        eprintln!("delay_link: ports must be numbers up to 65535 and the round trip milliseconds");
        std::process::exit(2);
    };
    let one_way = Duration::from_secs_f64(round_trip_ms / 2000.0);
    let listener = TcpListener::bind((host.as_str(), listen_port)).unwrap_or_else(|error| {
        eprintln!("delay_link: cannot listen on {host}:{listen_port}: {error}");
        std::process::exit(1);
    });
    thread::spawn(|| {
        let _ = io::copy(&mut io::stdin(), &mut io::sink());
        std::process::exit(0);
    });
    println!("ready");
    io::stdout().flush().expect("stdout");
    for client in listener.incoming().flatten() {
        if let Err(error) = relay(client, target_port, one_way) {
            eprintln!("delay_link: to 127.0.0.1:{target_port}: {error}");
        }
    }
}
