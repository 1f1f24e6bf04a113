//! The product's notifier: one SNS topic per audience, with message attributes for filter
//! policies.

use async_trait::async_trait;
use aws_sdk_sns::Client;
use aws_sdk_sns::error::DisplayErrorContext;
use aws_sdk_sns::types::MessageAttributeValue;

use common::notify::{Audience, Notification, Notifier, NotifyError};

#[derive(Debug, Clone)]
pub struct TopicArns {
    pub internal: String,
    pub merchant: String,
    pub payor: String,
}

impl TopicArns {
    fn of(&self, audience: Audience) -> &str {
        match audience {
            Audience::Internal => &self.internal,
            Audience::Merchant => &self.merchant,
            Audience::Payor => &self.payor,
        }
    }
}

#[derive(Clone)]
pub struct SnsNotifier {
    client: Client,
    topics: TopicArns,
}

impl SnsNotifier {
    pub fn new(client: Client, topics: TopicArns) -> Self {
        SnsNotifier { client, topics }
    }
}

#[async_trait]
impl Notifier for SnsNotifier {
    async fn publish(&self, n: &Notification) -> Result<(), NotifyError> {
        let mut req = self.client.publish().topic_arn(self.topics.of(n.audience)).message(n.body.to_string());
        for (name, value) in &n.attributes {
            let attr = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|e| NotifyError { audience: n.audience.as_str(), message: e.to_string() })?;
            req = req.message_attributes(*name, attr);
        }
        req.send()
            .await
            .map(|_| ())
            .map_err(|e| NotifyError { audience: n.audience.as_str(), message: DisplayErrorContext(&e).to_string() })
    }
}
