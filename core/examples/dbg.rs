use eddy_core::sim::{SimConfig, Simulation};
fn main() {
    let seed: u64 = std::env::args().nth(1).unwrap().parse().unwrap();
    let clients: usize = std::env::args().nth(2).unwrap().parse().unwrap();
    let mut c = SimConfig::new(seed, clients);
    c.trace = true;
    if let Err(e) = Simulation::new(c).and_then(Simulation::run) {
        println!("{}", e.reason);
    }
}
