//! The reconcile function: on a schedule, each configured provider's API is asked for the
//! refunds created since its checkpoint, and what no webhook brought is stored (and so told,
//! once, by the fan-out) with `proof=fetched`.

use aws_adapters::lambda::{Error, run_reconcile};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    run_reconcile().await
}
