//! The Conscent webhook function: API Gateway → `common::receive` → DynamoDB.

use aws_adapters::lambda::{Error, run_webhook};
use common::Provider;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    run_webhook(Provider::Conscent).await
}
