//! The fan-out function: the events table's stream → routing → SNS topics.

use aws_adapters::lambda::{Error, run_fanout};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    run_fanout().await
}
