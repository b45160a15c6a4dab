//! `ferrocast-fuzz TARGET`: one of `ferrocast::fuzzing::TARGETS` under afl-fuzz, in
//! persistent mode (the process stays up between inputs).

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(target) = ferrocast::fuzzing::target(&name) else {
        let names: Vec<_> = ferrocast::fuzzing::TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!("usage: ferrocast-fuzz TARGET, one of: {}", names.join(", "));
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| target(data));
}
