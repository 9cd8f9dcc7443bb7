//! The fields of each resource's records, as far as they are known, and their JSON Schema.
//!
//! Authorizations: every field of the vendor's sample record (documented), with the JSON type
//! it has there, plus what `../shared/mxc-api.md` says of some (formats, known values,
//! descriptions). Disputes, batches and ACH deposits have no public sample: their fields are
//! those the simulator writes (inferred), typed as it writes them.
//!
//! Only the record's id and time are required: MXC's records are sparse and a route may drop
//! any field. A field that is not required may also be `null` (seen for `rejectReason` and
//! `returnReason`). Unknown fields are allowed everywhere: MXC adds fields.

use serde_json::{json, Map, Value};

use mxc::{Resource, ACH, AUTHORIZATIONS, BATCHES, DISPUTES};

/// How fields with known values are described.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enums {
    /// The known values, and any other string: MXC may add a card brand or a status without
    /// breaking consumers that validate (the published schemas).
    Open,
    /// Only the known values: for code generators that want real enum types, and for tests
    /// that must notice a value nobody listed.
    Closed,
}

/// A value masked by a route: strings keep their last 4 characters, other values become
/// `"[masked]"`, `null` stays `null` (see `route::mask`).
const MASKED_PATTERN: &str = r"^(\*+.{4}|\*{0,4}|\[masked\])$";

#[derive(Debug, Clone)]
enum Kind {
    String,
    Number,
    Integer,
    Boolean,
    Array(Box<Field>),
    Object(Vec<(String, Field)>),
    /// Any JSON value (an empty array's items).
    Any,
}

/// One field of a record (or the record itself), and what routes do to it.
#[derive(Debug, Clone)]
pub(super) struct Field {
    kind: Kind,
    format: Option<&'static str>,
    known: &'static [&'static str],
    description: Option<&'static str>,
    required: bool,
    /// Routes that remove it (`redact.drop`), and that mask it (`redact.mask`).
    dropped_by: Vec<String>,
    masked_by: Vec<String>,
}

impl Field {
    fn of(kind: Kind) -> Field {
        Field {
            kind,
            format: None,
            known: &[],
            description: None,
            required: false,
            dropped_by: Vec::new(),
            masked_by: Vec::new(),
        }
    }

    /// The field tree of a JSON value: its types, as the value has them.
    fn infer(value: &Value) -> Field {
        Field::of(match value {
            Value::String(_) => Kind::String,
            Value::Number(_) => Kind::Number,
            Value::Bool(_) => Kind::Boolean,
            Value::Null => Kind::Any,
            Value::Array(items) => Kind::Array(Box::new(
                items.first().map_or(Field::of(Kind::Any), Field::infer),
            )),
            Value::Object(map) => Kind::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), Field::infer(v)))
                    .collect(),
            ),
        })
    }

    /// The field at `path` (dotted keys), if the tree has it.
    fn at(&mut self, path: &[&str]) -> Option<&mut Field> {
        let Some((first, rest)) = path.split_first() else {
            return Some(self);
        };
        match &mut self.kind {
            Kind::Object(fields) => fields
                .iter_mut()
                .find(|(k, _)| k == first)
                .and_then(|(_, f)| f.at(rest)),
            _ => None,
        }
    }

    /// Adds (or replaces) the field at `path`, creating the objects on the way.
    fn insert(&mut self, path: &[&str], field: Field) {
        let Some((first, rest)) = path.split_first() else {
            *self = field;
            return;
        };
        if !matches!(self.kind, Kind::Object(_)) {
            self.kind = Kind::Object(Vec::new());
        }
        if let Kind::Object(fields) = &mut self.kind {
            let at = match fields.iter().position(|(k, _)| k == first) {
                Some(i) => i,
                None => {
                    fields.push((first.to_string(), Field::of(Kind::Object(Vec::new()))));
                    fields.len() - 1
                }
            };
            fields[at].1.insert(rest, field);
        }
    }

    /// Marks what one route does to the fields under this one. Paths the tree does not know
    /// stay unknown fields (allowed, undescribed).
    pub(super) fn redact(&mut self, route: &str, drop: &[Vec<String>], mask: &[Vec<String>]) {
        for (paths, dropping) in [(drop, true), (mask, false)] {
            for path in paths {
                let keys: Vec<&str> = path.iter().map(String::as_str).collect();
                if let Some(field) = self.at(&keys) {
                    let list = if dropping {
                        &mut field.dropped_by
                    } else {
                        &mut field.masked_by
                    };
                    if !list.iter().any(|r| r == route) {
                        list.push(route.to_string());
                    }
                }
            }
        }
    }

    /// The JSON Schema of this field; `routes` is how many routes produce the event (a field
    /// masked by all of them is only ever masked).
    pub(super) fn render(&self, enums: Enums, routes: usize) -> Value {
        let nullable = !self.required;
        let types = |t: &str| {
            if nullable {
                json!([t, "null"])
            } else {
                json!(t)
            }
        };
        let mut schema = Map::new();
        let scalar = match &self.kind {
            Kind::String => Some("string"),
            Kind::Number => Some("number"),
            Kind::Integer => Some("integer"),
            Kind::Boolean => Some("boolean"),
            _ => None,
        };
        match (&self.kind, scalar) {
            (_, Some(t)) if !self.known.is_empty() => {
                let mut known: Vec<Value> = self.known.iter().map(|v| json!(v)).collect();
                match enums {
                    Enums::Closed => {
                        if nullable {
                            known.push(Value::Null);
                        }
                        schema.insert("enum".into(), Value::Array(known));
                    }
                    Enums::Open => {
                        let mut any = vec![json!({ "enum": known }), json!({ "type": t })];
                        if nullable {
                            any.push(json!({ "type": "null" }));
                        }
                        schema.insert("anyOf".into(), Value::Array(any));
                    }
                }
            }
            (_, Some(t)) => {
                schema.insert("type".into(), types(t));
            }
            (Kind::Array(item), _) => {
                schema.insert("type".into(), types("array"));
                schema.insert("items".into(), item.render(enums, routes));
            }
            (Kind::Object(fields), _) => {
                schema.insert("type".into(), types("object"));
                let mut properties = Map::new();
                let mut required = Vec::new();
                for (name, field) in fields {
                    properties.insert(name.clone(), field.render(enums, routes));
                    if field.required && field.dropped_by.is_empty() {
                        required.push(json!(name));
                    }
                }
                schema.insert("properties".into(), Value::Object(properties));
                if !required.is_empty() {
                    schema.insert("required".into(), Value::Array(required));
                }
            }
            _ => {}
        }
        if let Some(format) = self.format {
            schema.insert("format".into(), json!(format));
        }
        let mut about: Vec<String> = self.description.iter().map(|d| d.to_string()).collect();
        if !self.dropped_by.is_empty() {
            about.push(format!(
                "Absent from the events of route(s) {} (redact.drop).",
                self.dropped_by.join(", ")
            ));
        }
        if !self.masked_by.is_empty() {
            about.push(format!(
                "Masked by route(s) {} (redact.mask): a string keeps its last 4 characters behind '*', another value becomes \"[masked]\".",
                self.masked_by.join(", ")
            ));
            let masked = json!({ "type": ["string", "null"], "pattern": MASKED_PATTERN });
            schema = if self.masked_by.len() >= routes {
                masked.as_object().cloned().unwrap_or_default()
            } else {
                let mut either = Map::new();
                either.insert("anyOf".into(), json!([Value::Object(schema), masked]));
                either
            };
        }
        if !about.is_empty() {
            schema.insert("description".into(), json!(about.join(" ")));
        }
        Value::Object(schema)
    }
}

/// Known values, documented or seen.
const CARD_BRANDS: &[&str] = &["Visa", "Mastercard", "American Express", "Discover"];
const RESPONSE_STATUSES: &[&str] = &["Approved", "Declined"];

/// What is known of a field beyond its JSON type.
struct Fact {
    path: &'static str,
    format: Option<&'static str>,
    known: &'static [&'static str],
    about: &'static str,
}

const fn fact(path: &'static str, about: &'static str) -> Fact {
    Fact {
        path,
        format: None,
        known: &[],
        about,
    }
}

const fn time(path: &'static str, about: &'static str) -> Fact {
    Fact {
        format: Some("date-time"),
        ..fact(path, about)
    }
}

const fn uuid(path: &'static str, about: &'static str) -> Fact {
    Fact {
        format: Some("uuid"),
        ..fact(path, about)
    }
}

const fn known(path: &'static str, known: &'static [&'static str], about: &'static str) -> Fact {
    Fact {
        known,
        ..fact(path, about)
    }
}

const AUTHORIZATION_FACTS: &[Fact] = &[
    uuid("id", "The record's unique id (a UUID, documented): the deduplication key; the Kafka header mxc-record-id and ce_subject."),
    fact("accountNumber", "The merchant account (XMID) the authorization belongs to; the envelope's xmid."),
    time("transactionDateAndTime", "When the authorization happened, with the merchant's UTC offset (documented); the envelope's occurred_at, in UTC."),
    time("created", "When MXC ingested the record (seen in the vendor's sample: 98 minutes after its transaction); what the polling cursor follows."),
    time("transactionDate", "The transaction's day: midnight, with the merchant's UTC offset (seen in the vendor's sample)."),
    fact("authorizedAmount", "The amount authorized, in the transaction currency: a JSON number with up to 2 decimals (read it as a decimal, not a float)."),
    fact("cardholderBillingAmount", "The amount in the cardholder's billing currency, a JSON number with up to 2 decimals."),
    fact("cashBackAmount", "Cash back, a JSON number with up to 2 decimals."),
    fact("transactionCurrencyCode", "ISO 4217 numeric currency code (840: US dollar)."),
    fact("authorizationResponse", "The ISO 8583 response code: \"00\" is approved (documented)."),
    known("authorizationResponseStatus", RESPONSE_STATUSES, "\"Approved\", or e.g. \"Declined\" (documented): anything but \"Approved\" is a decline (the authorization.declined alert)."),
    fact("authorizationResponseDescription", "The response code's text, e.g. \"Insufficient funds\"."),
    fact("approvalCode", "The issuer's approval code (empty when declined)."),
    known("cardType", CARD_BRANDS, "The card brand (known values: the brands the simulator generates; the vendor's sample has a placeholder)."),
    fact("cardNumber", "The card number, never in clear (documented: data, hash, mask)."),
    fact("cardNumber.data", "The card number's data, hashed."),
    fact("cardNumber.hash", "The card number's hash: the same card has the same hash."),
    fact("cardNumber.mask", "The card number's last four digits."),
    fact("merchantName", "The merchant's doing-business-as name."),
    fact("mccCode", "The merchant category code (ISO 18245)."),
    fact("terminalNumber", "The merchant's terminal."),
    fact("retrievalReferenceNumber", "The retrieval reference number (ISO 8583 field 37)."),
    uuid("runId", "The id of MXC's ingestion run (seen in the vendor's sample)."),
    fact("uar", "The merchant's account, entity and location, as the roster (GET /boarding/v1/uar) has them."),
    fact("uar.account.number", "The XMID (the roster's account.number)."),
    time("uar.account.events.approved.date", "When the account was approved."),
    time("uar.account.events.draft.date", "When the account was drafted."),
    time("uar.account.events.received.date", "When the account's application was received."),
    time("uar.entity.established", "When the merchant's business was established."),
];

/// A field the simulator writes for a resource without a public sample: its JSON type and
/// what is known of it.
struct Written(Ty, Fact);

#[derive(Clone, Copy)]
enum Ty {
    String,
    Number,
    Integer,
    Boolean,
    Uuids,
}

const fn string(fact: Fact) -> Written {
    Written(Ty::String, fact)
}

const fn number(fact: Fact) -> Written {
    Written(Ty::Number, fact)
}

const fn integer(fact: Fact) -> Written {
    Written(Ty::Integer, fact)
}

const fn boolean(fact: Fact) -> Written {
    Written(Ty::Boolean, fact)
}

impl Ty {
    fn kind(self) -> Kind {
        match self {
            Ty::String => Kind::String,
            Ty::Number => Kind::Number,
            Ty::Integer => Kind::Integer,
            Ty::Boolean => Kind::Boolean,
            Ty::Uuids => Kind::Array(Box::new(Field {
                format: Some("uuid"),
                required: true,
                ..Field::of(Kind::String)
            })),
        }
    }
}

/// Written by every resource: who the record is about.
const MERCHANT: [Written; 4] = [
    string(fact(
        "accountNumber",
        "The merchant account (XMID); the envelope's xmid.",
    )),
    string(fact(
        "merchantName",
        "The merchant's doing-business-as name.",
    )),
    string(fact(
        "uar.account.number",
        "The XMID (the roster's account.number).",
    )),
    string(fact("uar.location.name", "The merchant location's name.")),
];

const DISPUTE_FIELDS: &[Written] = &[
    string(uuid("id", "The dispute's unique id: the deduplication key.")),
    string(fact("caseNumber", "The processor's case number.")),
    string(time("disputeDate", "When the dispute was raised, with the merchant's UTC offset (the field's name is inferred); the envelope's occurred_at, in UTC.")),
    string(known("disputeType", &["Chargeback", "Retrieval Request"], "A chargeback (the dispute.chargeback alert) or a request for the sale's documents.")),
    string(known("status", &["Open"], "The case's state.")),
    string(fact("reasonCode", "The card brand's reason code, e.g. \"10.4\" (Visa) or \"4837\" (Mastercard).")),
    string(fact("reasonDescription", "The reason code's text.")),
    number(fact("disputeAmount", "The amount disputed, a JSON number with up to 2 decimals.")),
    string(fact("currencyCode", "ISO 4217 alphabetic currency code.")),
    string(Fact { format: Some("date"), ..fact("dueDate", "The day by which the merchant must answer.") }),
    string(known("cardType", CARD_BRANDS, "The card brand of the disputed sale.")),
    string(fact("cardNumber.hash", "The card number's hash (as in the sale's record).")),
    string(fact("cardNumber.mask", "The card number's last four digits.")),
    string(uuid("authorizationId", "The id of the disputed sale's authorization record.")),
    string(time("transactionDateAndTime", "When the disputed sale happened.")),
    number(fact("transactionAmount", "The sale's amount, a JSON number with up to 2 decimals.")),
    string(fact("approvalCode", "The sale's approval code.")),
    string(fact("retrievalReferenceNumber", "The sale's retrieval reference number.")),
    string(fact("terminalNumber", "The sale's terminal.")),
];

const BATCH_FIELDS: &[Written] = &[
    string(uuid("id", "The batch's unique id: the deduplication key.")),
    string(fact("terminalNumber", "The terminal whose business day the batch closes.")),
    string(fact("batchNumber", "The batch's number on its terminal.")),
    string(time("batchDate", "When the batch closed, with the merchant's UTC offset (seen in public client code); the envelope's occurred_at, in UTC.")),
    string(time("openDate", "When the batch opened.")),
    integer(fact("transactionCount", "Transactions in the batch.")),
    integer(fact("salesCount", "Sales in the batch.")),
    number(fact("salesAmount", "The sales' total, a JSON number with up to 2 decimals.")),
    integer(fact("refundCount", "Refunds in the batch.")),
    number(fact("refundAmount", "The refunds' total, a JSON number with up to 2 decimals.")),
    number(fact("netAmount", "Sales less refunds, a JSON number with up to 2 decimals.")),
    string(fact("currencyCode", "ISO 4217 alphabetic currency code.")),
    boolean(fact("rejected", "Whether the processor rejected the batch (the batch.rejected alert; seen in public client code).")),
    string(fact("rejectReason", "Why it was rejected; null when it was not.")),
    string(known("status", &["Settled", "Rejected"], "The batch's state.")),
    Written(
        Ty::Uuids,
        fact("authorizationIds", "The ids of the sales' authorization records."),
    ),
];

const ACH_FIELDS: &[Written] = &[
    string(uuid("id", "The deposit's unique id: the deduplication key.")),
    string(time("depositDate", "When the deposit was made, with the merchant's UTC offset (seen in public client code); the envelope's occurred_at, in UTC.")),
    string(uuid("batchId", "The id of the settlement batch it pays.")),
    number(fact("grossAmount", "The batch's amount, a JSON number with up to 2 decimals.")),
    number(fact("feeAmount", "Card fees withheld, a JSON number with up to 2 decimals.")),
    number(fact("amount", "The amount deposited (gross less fees), a JSON number with up to 2 decimals.")),
    string(fact("currencyCode", "ISO 4217 alphabetic currency code.")),
    string(known("status", &["Settled", "Returned"], "The deposit's state: \"Returned\" is the ach.returned alert.")),
    string(fact("returnReason", "The bank's ACH return code and text, e.g. \"R01 Insufficient Funds\"; null unless returned.")),
    string(fact("traceNumber", "The ACH trace number.")),
];

fn apply(field: &mut Field, fact: &Fact) {
    field.format = fact.format.or(field.format);
    field.known = if fact.known.is_empty() {
        field.known
    } else {
        fact.known
    };
    field.description = Some(fact.about);
}

/// The field tree of one resource's records; its id and time fields are required.
pub(super) fn record(resource: &Resource) -> Field {
    let mut root = if resource == &AUTHORIZATIONS {
        // The sample is compiled in and parsed in a unit test: it cannot fail here.
        let sample: Value = serde_json::from_str(mxc::AUTHORIZATION_SAMPLE).unwrap_or(Value::Null);
        let mut root = Field::infer(&sample);
        for fact in AUTHORIZATION_FACTS {
            let path: Vec<&str> = fact.path.split('.').collect();
            if let Some(field) = root.at(&path) {
                apply(field, fact);
            }
        }
        root
    } else {
        let fields = match resource.name {
            n if n == DISPUTES.name => DISPUTE_FIELDS,
            n if n == BATCHES.name => BATCH_FIELDS,
            n if n == ACH.name => ACH_FIELDS,
            _ => &[],
        };
        let mut root = Field::of(Kind::Object(Vec::new()));
        for Written(ty, fact) in fields.iter().chain(&MERCHANT) {
            let mut field = Field::of(ty.kind());
            apply(&mut field, fact);
            let path: Vec<&str> = fact.path.split('.').collect();
            root.insert(&path, field);
        }
        root
    };
    root.required = true;
    for key in [resource.id_field, resource.time_field] {
        if let Some(field) = root.at(&[key]) {
            field.required = true;
        }
    }
    root
}

#[cfg(test)]
mod tests {
    use super::*;
    use mxc::RESOURCES;

    #[test]
    fn every_fact_names_a_field_of_the_sample() {
        let sample: Value = serde_json::from_str(mxc::AUTHORIZATION_SAMPLE).unwrap();
        let mut root = Field::infer(&sample);
        for fact in AUTHORIZATION_FACTS {
            let path: Vec<&str> = fact.path.split('.').collect();
            assert!(
                root.at(&path).is_some(),
                "{} is not in the sample",
                fact.path
            );
        }
    }

    #[test]
    fn id_and_time_are_required_and_the_rest_may_be_null() {
        for r in RESOURCES {
            let schema = record(r).render(Enums::Closed, 0);
            assert_eq!(
                schema["required"],
                json!([r.id_field, r.time_field]),
                "{}",
                r.name
            );
            assert_eq!(schema["properties"][r.time_field]["format"], "date-time");
            assert_eq!(
                schema["properties"]["accountNumber"]["type"],
                json!(["string", "null"])
            );
        }
    }

    #[test]
    fn redaction_marks_dropped_fields_optional_and_masked_ones_masked() {
        let mut auth = record(&AUTHORIZATIONS);
        let path = |p: &str| p.split('.').map(str::to_string).collect::<Vec<_>>();
        auth.redact(
            "a",
            &[path("id"), path("no.such")],
            &[path("authorizedAmount")],
        );
        let one = auth.render(Enums::Open, 1);
        assert_eq!(one["required"], json!(["transactionDateAndTime"]));
        assert!(one["properties"]["id"]["description"]
            .as_str()
            .unwrap()
            .contains("route(s) a"));
        assert_eq!(
            one["properties"]["authorizedAmount"]["pattern"],
            MASKED_PATTERN
        );
        // Another route of the same type keeps the amount: a number, or masked.
        let two = auth.render(Enums::Open, 2);
        assert_eq!(
            two["properties"]["authorizedAmount"]["anyOf"][0]["type"],
            json!(["number", "null"])
        );
    }
}
