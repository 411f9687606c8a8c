//! The smallest Rust application that embeds plugvisor, using only the crate
//! root's API: activate every plugin of a folder, watch their events, check
//! each one's health, and shut them all down.
//!
//! ```sh
//! cargo run -p plugvisor-example-embedding -- examples/plugins
//! ```

use std::time::Duration;

use plugvisor::{Environment, EnvironmentConfig, EventKind, HealthPolicy, PluginState};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let plugins_dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "examples/plugins".into());
    let config = EnvironmentConfig::builder(&plugins_dir)
        .health(HealthPolicy::new(Duration::from_secs(5), 3)?)
        .build()?;
    let env = Environment::new(config)?;

    let mut events = env.subscribe();
    let printer = tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            if let EventKind::Running { startup_ms } = event.kind {
                println!("event: {} Running after {startup_ms} ms", event.status.id);
            }
        }
    });

    for id in env.plugin_ids() {
        match env.activate(&id).await {
            Ok(status) => println!("{id}: {} (pid {:?})", status.state, status.pid),
            Err(error) => println!("{id}: {error}"),
        }
    }
    for status in env.statuses() {
        if status.state == PluginState::Running {
            env.perform_health_check(&status.id).await?;
            println!("{}: healthy", status.id);
        }
    }
    env.shutdown().await;
    printer.abort();
    let running = env
        .statuses()
        .iter()
        .filter(|s| s.state != PluginState::NotRunning)
        .count();
    println!("shut down; {running} plugin(s) not stopped");
    Ok(())
}
