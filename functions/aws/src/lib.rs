//! What every Lambda function shares beyond the core pipeline: the AWS adapters of its ports
//! (the DynamoDB [`EventStore`](common::store::EventStore), the SNS
//! [`Notifier`](common::notify::Notifier), Secrets Manager as a
//! [`SecretSource`](common::secrets::SecretSource), the providers' APIs'
//! [`HttpGet`](common::api::HttpGet)) and the Lambda entry points. The CLI uses
//! the adapters too; the local runner and the core build without any AWS SDK.

pub mod dynamodb;
pub mod http;
pub mod lambda;
pub mod sns;
