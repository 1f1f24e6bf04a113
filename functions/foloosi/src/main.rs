//! The Foloosi webhook function: API Gateway → `common::receive` → DynamoDB.

use common::Provider;
use common::lambda::{Error, run_webhook};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    run_webhook(Provider::Foloosi).await
}
