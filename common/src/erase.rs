//! Erasing one person's contact data, for data-protection requests (`refund-relay erase`).
//!
//! A person is found by the address they paid with: every event whose payor has it or whose
//! payload mentions it, and every held delivery whose body, or query, mentions it. In those, the
//! payor's address and phone go, and so do, in the payload, every value that mentions the address,
//! equals the payor's phone, or sits under a contact field (`email`, `phone_number`, `full_name`,
//! `address`, ...). What stays is what the money needs: the refund, its amounts, its references
//! and the provider's customer id. Aggregates hold no contact data, so they are not touched.
//!
//! Pure functions over stored records; [`crate::operate`] drives them over a store.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::credentials::{replace_form_values, words};
use crate::event::RefundEvent;
use crate::held::HeldDelivery;

/// What replaces erased values.
pub const ERASED: &str = "[erased]";
const ERASED_FORM: &str = "%5Berased%5D";

/// The address a person paid with, compared without case. Personal data: its `Debug` is
/// redacted, so logging an operator command never writes it down.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PayorEmail(String);

impl PayorEmail {
    pub fn new(address: &str) -> Result<Self, String> {
        let address = address.trim();
        let (local, domain) = address.split_once('@').ok_or("not an email address: no @")?;
        if local.is_empty() || domain.is_empty() || address.len() > 320 || address.chars().any(char::is_whitespace) {
            return Err("not an email address".into());
        }
        Ok(PayorEmail(address.to_lowercase()))
    }

    /// Whether `text` contains the address, in any case.
    fn in_text(&self, text: &str) -> bool {
        text.to_lowercase().contains(&self.0)
    }
}

impl TryFrom<String> for PayorEmail {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        PayorEmail::new(&s)
    }
}

impl From<PayorEmail> for String {
    fn from(e: PayorEmail) -> String {
        e.0
    }
}

impl fmt::Debug for PayorEmail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PayorEmail(<redacted>)")
    }
}

/// Contact fields: a name with one of these words...
const CONTACT_WORDS: &[&str] = &[
    "email",
    "phone",
    "mobile",
    "telephone",
    "address",
    "street",
    "city",
    "postcode",
    "pincode",
    "zip",
    "zipcode",
    "postal",
    "location",
    "latitude",
    "longitude",
    "username",
];
/// ...or a `name` after one of these (`full_name`, `customer_name`)...
const NAME_QUALIFIERS: &[&str] = &["first", "last", "full", "given", "family", "middle", "display"];
/// ...or after one of these, which also make a bare `name` inside an object they name a contact
/// field (`billing_contact.name`, not `product.name`).
const PERSON_WORDS: &[&str] = &[
    "customer",
    "payer",
    "payor",
    "member",
    "cardholder",
    "holder",
    "billing",
    "shipping",
    "contact",
    "buyer",
    "user",
    "person",
    "owner",
];

fn is_contact_field(name: &str, in_person: bool) -> bool {
    let words = words(name);
    let named = match words.as_slice() {
        [.., before, last] if last == "name" => {
            NAME_QUALIFIERS.contains(&before.as_str()) || PERSON_WORDS.contains(&before.as_str())
        }
        [only] if only == "name" => in_person,
        _ => false,
    };
    named || words.iter().any(|w| CONTACT_WORDS.contains(&w.as_str()))
}

fn names_a_person(name: &str) -> bool {
    words(name).iter().any(|w| PERSON_WORDS.contains(&w.as_str()))
}

/// `event` without `who`'s contact data, or `None` when it holds none.
pub fn erase_event(event: &RefundEvent, who: &PayorEmail) -> Option<RefundEvent> {
    let payor_is = event.payor.email.as_deref().is_some_and(|e| PayorEmail::new(e).is_ok_and(|e| e == *who));
    if !payor_is && !mentions(event.raw_payload.as_bytes(), who) {
        return None;
    }
    let also: Vec<String> = event.payor.phone.iter().cloned().collect();
    let mut erased = event.clone();
    erased.payor.email = None;
    erased.payor.phone = None;
    erased.raw_payload = String::from_utf8_lossy(&erase_body(event.raw_payload.as_bytes(), who, &also)).into_owned();
    if erased.reason.as_deref().is_some_and(|r| who.in_text(r)) {
        erased.reason = Some(ERASED.into());
    }
    Some(erased)
}

/// `held` without `who`'s contact data, or `None` when its body and query do not mention them.
pub fn erase_held(held: &HeldDelivery, who: &PayorEmail) -> Option<HeldDelivery> {
    let query_mentions = held.query.as_deref().is_some_and(|q| mentions(q.as_bytes(), who));
    if !query_mentions && !mentions(&held.body, who) {
        return None;
    }
    let mut erased = held.clone();
    erased.body = erase_body(&held.body, who, &[]);
    if let Some(query) = &held.query {
        erased.query = Some(String::from_utf8_lossy(&erase_body(query.as_bytes(), who, &[])).into_owned());
    }
    Some(erased)
}

/// Whether the body mentions the address: as sent, form-decoded, or in a JSON string.
fn mentions(body: &[u8], who: &PayorEmail) -> bool {
    who.in_text(&String::from_utf8_lossy(body))
        || form_urlencoded::parse(body).any(|(k, v)| who.in_text(&k) || who.in_text(&v))
        || serde_json::from_slice::<Value>(body).is_ok_and(|v| json_mentions(&v, who))
}

fn json_mentions(v: &Value, who: &PayorEmail) -> bool {
    match v {
        Value::String(s) => who.in_text(s),
        Value::Array(items) => items.iter().any(|v| json_mentions(v, who)),
        Value::Object(fields) => fields.iter().any(|(k, v)| who.in_text(k) || json_mentions(v, who)),
        _ => false,
    }
}

/// The body with contact values replaced: JSON value by value, a form field by field, and
/// anything else (or anything left) by replacing the address wherever it appears.
fn erase_body(body: &[u8], who: &PayorEmail, also: &[String]) -> Vec<u8> {
    let touches = |s: &str| who.in_text(s) || also.iter().any(|a| s.trim().eq_ignore_ascii_case(a.trim()));
    let erased = match serde_json::from_slice::<Value>(body) {
        Ok(mut v) => {
            erase_value(&mut v, false, &touches);
            serde_json::to_vec(&v).unwrap_or_else(|_| body.to_vec())
        }
        Err(_) => replace_form_values(body, ERASED_FORM.as_bytes(), |k, v| is_contact_field(k, false) || touches(v)).0,
    };
    replace_address(&erased, who)
}

fn erase_value(v: &mut Value, in_person: bool, touches: &dyn Fn(&str) -> bool) {
    match v {
        Value::String(s) if touches(s) => *v = Value::from(ERASED),
        Value::Number(n) if touches(&n.to_string()) => *v = Value::from(ERASED),
        Value::Array(items) => items.iter_mut().for_each(|v| erase_value(v, in_person, touches)),
        Value::Object(fields) => {
            for (name, value) in fields.iter_mut() {
                if is_contact_field(name, in_person) && !value.is_null() {
                    *value = Value::from(ERASED);
                } else {
                    erase_value(value, names_a_person(name), touches);
                }
            }
        }
        _ => {}
    }
}

/// Every remaining appearance of the address, as sent or with its `@` percent-encoded, in any
/// case: the last word, for bodies that are neither JSON nor a form.
fn replace_address(body: &[u8], who: &PayorEmail) -> Vec<u8> {
    let encoded = who.0.replace('@', "%40");
    let mut out = body.to_vec();
    for needle in [who.0.as_bytes(), encoded.as_bytes()] {
        let mut next = Vec::with_capacity(out.len());
        let mut i = 0;
        while i < out.len() {
            if out[i..].len() >= needle.len() && out[i..i + needle.len()].eq_ignore_ascii_case(needle) {
                next.extend_from_slice(ERASED.as_bytes());
                i += needle.len();
            } else {
                next.push(out[i]);
                i += 1;
            }
        }
        out = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who() -> PayorEmail {
        PayorEmail::new("John.Doe@Example.com").unwrap()
    }

    #[test]
    fn an_address_is_checked_and_never_debugged() {
        assert!(PayorEmail::new("no-at-sign").is_err() && PayorEmail::new("a b@c").is_err());
        assert_eq!(format!("{:?}", who()), "PayorEmail(<redacted>)");
        let json = serde_json::to_string(&who()).unwrap();
        assert_eq!(serde_json::from_str::<PayorEmail>(&json).unwrap(), who());
        assert!(serde_json::from_str::<PayorEmail>("\"nobody\"").is_err());
    }

    /// Memberful's example: the member's address, name, phone, user name and postal address go;
    /// the order, its total and the provider's customer id stay.
    #[test]
    fn a_json_payload_loses_its_contact_fields_and_keeps_the_money() {
        let body =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/memberful/order.refunded.json"))
                .unwrap();
        let out: Value = serde_json::from_slice(&erase_body(&body, &who(), &[])).unwrap();
        let member = &out["order"]["member"];
        for field in ["email", "full_name", "phone_number", "username", "address"] {
            assert_eq!(member[field], ERASED, "{field}");
        }
        assert_eq!(member["stripe_customer_id"], "cus_00000");
        assert_eq!((out["order"]["total"].as_i64(), out["order"]["uuid"].as_str().is_some()), (Some(9900), true));
        assert_eq!(out["order"]["subscriptions"][0]["subscription"]["name"], "Sample plan");
    }

    #[test]
    fn a_bare_name_goes_only_under_a_person() {
        let body = br#"{"billing_contact":{"name":"Dana","email":"x@y.z"},"product":{"name":"Plan"},"note":"JOHN.DOE@example.com"}"#;
        let out: Value = serde_json::from_slice(&erase_body(body, &who(), &[])).unwrap();
        assert_eq!(out["billing_contact"]["name"], ERASED);
        assert_eq!(out["product"]["name"], "Plan");
        assert_eq!(out["note"], ERASED);
    }

    #[test]
    fn forms_and_text_lose_the_address_in_every_spelling() {
        let form = b"transaction_no=FL1&customer_email=john.doe%40example.com&customer_phone=971500000&amount=10";
        assert!(mentions(form, &who()));
        let out = String::from_utf8(erase_body(form, &who(), &[])).unwrap();
        assert_eq!(out, "transaction_no=FL1&customer_email=%5Berased%5D&customer_phone=%5Berased%5D&amount=10");
        let text = b"from JOHN.DOE@EXAMPLE.COM and john.doe%40example.com";
        assert_eq!(erase_body(text, &who(), &[]), b"from [erased] and [erased]");
    }
}
