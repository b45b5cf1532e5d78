//! A Rust kernel built the default way (`rustc --target wasm32-wasi`): its memory declares no
//! maximum, so the platform writes its cap in at upload (docs/kernels.md, "Accepted modules").
//!
//! stdin: N (decimal). stdout: the number of primes <= N, from a sieve of N + 1 bytes, so the
//! memory it needs grows with N: a large N fails under a small cap in every host alike.
//! With the argument `list` it prints the primes themselves, one a line.

use std::io::{self, BufWriter, Read, Write};
use std::process::exit;

fn main() {
    let mut input = String::new();
    if io::stdin().read_to_string(&mut input).is_err() {
        eprintln!("sieve_rs: stdin is not UTF-8");
        exit(2);
    }
    let n: usize = match input.trim().parse() {
        Ok(n) => n,
        Err(_) => {
            eprintln!("sieve_rs: expected a number on stdin, got {:?}", input.trim());
            exit(2);
        }
    };
    let list = std::env::args().skip(1).any(|a| a == "list");
    let mut composite = vec![false; n + 1];
    let mut count = 0u64;
    let out = io::stdout();
    let mut out = BufWriter::new(out.lock());
    for i in 2..=n {
        if composite[i] {
            continue;
        }
        count += 1;
        if list {
            writeln!(out, "{}", i).unwrap();
        }
        let mut j = i.saturating_mul(i);
        while j <= n {
            composite[j] = true;
            j += i;
        }
    }
    if !list {
        writeln!(out, "{}", count).unwrap();
    }
}
