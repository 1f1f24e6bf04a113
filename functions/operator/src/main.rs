//! The operator function: `reprocess`, `redrive` and `replay` inside the deployment, on its
//! configuration and with a role the topics let publish. The CLI invokes it (`--stack`).

use aws_adapters::lambda::{Error, run_operator};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    run_operator().await
}
