use eddy_core::sim::{SimConfig, Simulation};
fn main() {
    for clients in 2..4 {
        for steps in [5usize, 10, 20, 40, 80] {
            for seed in 0..300 {
                let mut c = SimConfig::new(seed, clients);
                c.steps = steps;
                c.disconnect_per_mille = 0; c.offline_per_mille = 0; c.server_crash_per_mille = 0; c.client_restart_per_mille = 0;
                c.settle_budget_ms = 60_000; c.trace = true;
                if let Err(e) = Simulation::new(c).and_then(Simulation::run) {
                    println!("clients={clients} steps={steps} seed={seed}: {}", e.reason);
                    return;
                }
            }
        }
    }
}
