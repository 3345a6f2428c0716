//! Node configuration as XEP-0004 data forms: the `pubsub#node_config` form (XEP-0060
//! §8.2, §16.4.4), publish options (§7.1.5) as preconditions on it, and the
//! `pubsub#meta-data` form of a node's disco#info (§5.4).

use crate::stanza::{Condition, StanzaError};
use crate::storage::{AccessModel, NodeConfig, NotificationType, SendLast};
use crate::xml::{self, Element, ns};

pub const NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";
pub const PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";
pub const META_DATA: &str = "http://jabber.org/protocol/pubsub#meta-data";

/// A submitted form's fields, FORM_TYPE apart, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Submitted {
    pub fields: Vec<(String, Vec<String>)>,
}

/// Read a submitted form (XEP-0004 §3.3) of `form_type`. `None`: the submitter cancelled
/// (type `cancel`), which leaves everything as it is (XEP-0060 §8.2.3).
pub fn parse_submitted(x: &Element, form_type: &str) -> Result<Option<Submitted>, StanzaError> {
    if !x.is("x", ns::DATA_FORMS) {
        return Err(StanzaError::bad_request("expected a data form (jabber:x:data)"));
    }
    match x.attr("type") {
        Some("submit") => {}
        Some("cancel") => return Ok(None),
        _ => return Err(StanzaError::bad_request("a data form sent to be applied has type 'submit'")),
    }
    let mut fields = Vec::new();
    let mut seen_type = false;
    for field in x.children().filter(|c| c.is("field", ns::DATA_FORMS)) {
        let Some(var) = field.attr("var") else {
            return Err(StanzaError::bad_request("a submitted field needs a 'var'"));
        };
        let values: Vec<String> = field.children().filter(|c| c.is("value", ns::DATA_FORMS)).map(|v| v.text()).collect();
        if var == "FORM_TYPE" {
            if values.as_slice() != [form_type] {
                return Err(StanzaError::bad_request(format!("the FORM_TYPE must be {form_type}")));
            }
            seen_type = true;
            continue;
        }
        if fields.iter().any(|(v, _)| v == var) {
            return Err(StanzaError::bad_request(format!("the field {var} is given twice")));
        }
        fields.push((var.to_string(), values));
    }
    if !seen_type {
        return Err(StanzaError::bad_request(format!("the form has no FORM_TYPE (expected {form_type})")));
    }
    Ok(Some(Submitted { fields }))
}

/// One configuration field set to a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting {
    AccessModel(AccessModel),
    RosterGroups(Vec<String>),
    /// `None` is `max`.
    MaxItems(Option<u64>),
    PersistItems(bool),
    SendLast(SendLast),
    DeliverNotifications(bool),
    DeliverPayloads(bool),
    NotifyRetract(bool),
    NotifyDelete(bool),
    NotifyConfig(bool),
    NotificationType(NotificationType),
    Title(String),
    Description(String),
    PayloadType(String),
    /// A field PEP supports with one value only (e.g. `publish_model` = `publishers`):
    /// the value asked for is that one.
    Fixed,
}

impl Setting {
    /// The field it sets, for messages.
    pub fn var(&self) -> &'static str {
        match self {
            Setting::AccessModel(_) => "pubsub#access_model",
            Setting::RosterGroups(_) => "pubsub#roster_groups_allowed",
            Setting::MaxItems(_) => "pubsub#max_items",
            Setting::PersistItems(_) => "pubsub#persist_items",
            Setting::SendLast(_) => "pubsub#send_last_published_item",
            Setting::DeliverNotifications(_) => "pubsub#deliver_notifications",
            Setting::DeliverPayloads(_) => "pubsub#deliver_payloads",
            Setting::NotifyRetract(_) => "pubsub#notify_retract",
            Setting::NotifyDelete(_) => "pubsub#notify_delete",
            Setting::NotifyConfig(_) => "pubsub#notify_config",
            Setting::NotificationType(_) => "pubsub#notification_type",
            Setting::Title(_) => "pubsub#title",
            Setting::Description(_) => "pubsub#description",
            Setting::PayloadType(_) => "pubsub#type",
            Setting::Fixed => "a fixed field",
        }
    }
}

/// Why a field cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldError {
    /// A field PEP does not know (or has no other value for).
    Unsupported(String),
    /// A value that is not one the field takes.
    Invalid(String),
    /// An access model PEP does not offer.
    UnsupportedAccessModel(String),
}

impl FieldError {
    /// The error for a form that configures a node (XEP-0060 §8.1.2, §8.2.5.2).
    pub fn to_stanza_error(&self) -> StanzaError {
        match self {
            FieldError::Unsupported(var) => {
                StanzaError::new(Condition::NotAcceptable).with_text(format!("the field {var} is not supported"))
            }
            FieldError::Invalid(var) => StanzaError::bad_request(format!("invalid value for {var}")),
            FieldError::UnsupportedAccessModel(model) => StanzaError::new(Condition::NotAcceptable)
                .with_text(format!("the access model {model:?} is not supported"))
                .with_app(Element::bare("unsupported-access-model", super::PUBSUB_ERRORS)),
        }
    }
}

fn boolean(var: &str, values: &[String]) -> Result<bool, FieldError> {
    match single(var, values)? {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(FieldError::Invalid(var.to_string())),
    }
}

fn single<'a>(var: &str, values: &'a [String]) -> Result<&'a str, FieldError> {
    match values {
        [v] => Ok(v.trim()),
        _ => Err(FieldError::Invalid(var.to_string())),
    }
}

/// The longest text a text field keeps.
const MAX_TEXT: usize = 1024;

fn text(var: &str, values: &[String]) -> Result<String, FieldError> {
    let joined = values.join("\n");
    if joined.len() > MAX_TEXT {
        return Err(FieldError::Invalid(var.to_string()));
    }
    Ok(joined)
}

/// Read the fields of a submitted form as settings.
pub fn settings(form: &Submitted) -> Result<Vec<Setting>, FieldError> {
    form.fields.iter().map(|(var, values)| setting(var, values)).collect()
}

fn setting(var: &str, values: &[String]) -> Result<Setting, FieldError> {
    let invalid = || FieldError::Invalid(var.to_string());
    Ok(match var {
        "pubsub#access_model" => {
            let v = single(var, values)?;
            Setting::AccessModel(AccessModel::parse(v).ok_or_else(|| FieldError::UnsupportedAccessModel(v.to_string()))?)
        }
        "pubsub#roster_groups_allowed" => {
            // Stored one a line: a name with a line break in it cannot be kept.
            if values.iter().any(|g| g.contains('\n')) || values.len() > 100 {
                return Err(invalid());
            }
            let mut groups: Vec<String> = values.iter().filter(|g| !g.is_empty()).cloned().collect();
            groups.sort();
            groups.dedup();
            Setting::RosterGroups(groups)
        }
        "pubsub#max_items" => match single(var, values)? {
            "max" => Setting::MaxItems(None),
            n => Setting::MaxItems(Some(n.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(invalid)?)),
        },
        "pubsub#persist_items" => Setting::PersistItems(boolean(var, values)?),
        "pubsub#send_last_published_item" => Setting::SendLast(SendLast::parse(single(var, values)?).ok_or_else(invalid)?),
        "pubsub#deliver_notifications" => Setting::DeliverNotifications(boolean(var, values)?),
        "pubsub#deliver_payloads" => Setting::DeliverPayloads(boolean(var, values)?),
        "pubsub#notify_retract" => Setting::NotifyRetract(boolean(var, values)?),
        "pubsub#notify_delete" => Setting::NotifyDelete(boolean(var, values)?),
        "pubsub#notify_config" => Setting::NotifyConfig(boolean(var, values)?),
        "pubsub#notification_type" => {
            Setting::NotificationType(NotificationType::parse(single(var, values)?).ok_or_else(invalid)?)
        }
        "pubsub#title" => Setting::Title(text(var, values)?),
        "pubsub#description" => Setting::Description(text(var, values)?),
        "pubsub#type" => Setting::PayloadType(text(var, values)?),
        // Only the owner publishes, nobody is notified of subscriptions, nothing is purged
        // when the owner goes offline, and subscribing is allowed: asking for exactly
        // that is fine, anything else is not supported.
        "pubsub#publish_model" if single(var, values)? == "publishers" => Setting::Fixed,
        "pubsub#notify_sub" if !boolean(var, values)? => Setting::Fixed,
        "pubsub#purge_offline" if !boolean(var, values)? => Setting::Fixed,
        "pubsub#subscribe" if boolean(var, values)? => Setting::Fixed,
        _ => return Err(FieldError::Unsupported(var.to_string())),
    })
}

/// Apply settings to a configuration.
pub fn apply(config: &mut NodeConfig, settings: &[Setting]) {
    for s in settings {
        match s.clone() {
            Setting::AccessModel(v) => config.access_model = v,
            Setting::RosterGroups(v) => config.roster_groups = v,
            Setting::MaxItems(v) => config.max_items = v,
            Setting::PersistItems(v) => config.persist_items = v,
            Setting::SendLast(v) => config.send_last = v,
            Setting::DeliverNotifications(v) => config.deliver_notifications = v,
            Setting::DeliverPayloads(v) => config.deliver_payloads = v,
            Setting::NotifyRetract(v) => config.notify_retract = v,
            Setting::NotifyDelete(v) => config.notify_delete = v,
            Setting::NotifyConfig(v) => config.notify_config = v,
            Setting::NotificationType(v) => config.notification_type = v,
            Setting::Title(v) => config.title = v,
            Setting::Description(v) => config.description = v,
            Setting::PayloadType(v) => config.payload_type = v,
            Setting::Fixed => {}
        }
    }
}

/// Whether a node's configuration already is what a publish option asks for (XEP-0060
/// §7.1.5). `max_items` of `max` and of the server's limit are the same thing.
pub fn satisfied(config: &NodeConfig, setting: &Setting, server_max_items: u64) -> bool {
    let max_items = |v: Option<u64>| v.unwrap_or(server_max_items).min(server_max_items);
    match setting {
        Setting::AccessModel(v) => config.access_model == *v,
        Setting::RosterGroups(v) => config.roster_groups == *v,
        Setting::MaxItems(v) => max_items(config.max_items) == max_items(*v),
        Setting::PersistItems(v) => config.persist_items == *v,
        Setting::SendLast(v) => config.send_last == *v,
        Setting::DeliverNotifications(v) => config.deliver_notifications == *v,
        Setting::DeliverPayloads(v) => config.deliver_payloads == *v,
        Setting::NotifyRetract(v) => config.notify_retract == *v,
        Setting::NotifyDelete(v) => config.notify_delete == *v,
        Setting::NotifyConfig(v) => config.notify_config == *v,
        Setting::NotificationType(v) => config.notification_type == *v,
        Setting::Title(v) => config.title == *v,
        Setting::Description(v) => config.description == *v,
        Setting::PayloadType(v) => config.payload_type == *v,
        Setting::Fixed => true,
    }
}

fn field(var: &str, kind: &str, label: &str, values: &[&str]) -> Element {
    let mut f = xml::element("field", ns::DATA_FORMS, &[("var", var), ("type", kind), ("label", label)]);
    for v in values {
        f.append_child(xml::text_element("value", ns::DATA_FORMS, v));
    }
    f
}

fn with_options(mut f: Element, options: &[&str]) -> Element {
    for o in options {
        let mut option = Element::bare("option", ns::DATA_FORMS);
        option.append_child(xml::text_element("value", ns::DATA_FORMS, o));
        f.append_child(option);
    }
    f
}

fn flag(v: bool) -> &'static str {
    if v { "1" } else { "0" }
}

/// The configuration as a form: `form` to be filled in (configure, default), `result` to
/// be read (notifications of a change, meta-data).
pub fn config_form(config: &NodeConfig, form_type: &str, kind: &str) -> Element {
    let mut x = xml::element("x", ns::DATA_FORMS, &[("type", kind)]);
    let mut form_type_field = xml::element("field", ns::DATA_FORMS, &[("var", "FORM_TYPE"), ("type", "hidden")]);
    form_type_field.append_child(xml::text_element("value", ns::DATA_FORMS, form_type));
    x.append_child(form_type_field);
    let max_items = config.max_items.map_or_else(|| "max".to_string(), |n| n.to_string());
    let groups: Vec<&str> = config.roster_groups.iter().map(String::as_str).collect();
    let fields = [
        field("pubsub#title", "text-single", "A friendly name for the node", &[&config.title]),
        field("pubsub#description", "text-single", "A description of the node", &[&config.description]),
        field("pubsub#type", "text-single", "The semantic type of the payloads", &[&config.payload_type]),
        with_options(
            field("pubsub#access_model", "list-single", "Who may subscribe and retrieve items", &[config.access_model.as_str()]),
            &["open", "presence", "roster", "whitelist"],
        ),
        field("pubsub#roster_groups_allowed", "list-multi", "Roster groups allowed (roster access model)", &groups),
        with_options(field("pubsub#publish_model", "list-single", "Who may publish", &["publishers"]), &["publishers"]),
        field("pubsub#max_items", "text-single", "Max # of items to persist (`max` for the server's limit)", &[&max_items]),
        field("pubsub#persist_items", "boolean", "Persist items to storage", &[flag(config.persist_items)]),
        with_options(
            field("pubsub#send_last_published_item", "list-single", "When to send the last published item", &[
                config.send_last.as_str(),
            ]),
            &["never", "on_sub", "on_sub_and_presence"],
        ),
        field("pubsub#deliver_notifications", "boolean", "Deliver event notifications", &[flag(config.deliver_notifications)]),
        field("pubsub#deliver_payloads", "boolean", "Deliver payloads with event notifications", &[flag(config.deliver_payloads)]),
        field("pubsub#notify_retract", "boolean", "Notify subscribers when items are removed", &[flag(config.notify_retract)]),
        field("pubsub#notify_delete", "boolean", "Notify subscribers when the node is deleted", &[flag(config.notify_delete)]),
        field("pubsub#notify_config", "boolean", "Notify subscribers when the configuration changes", &[flag(config.notify_config)]),
        with_options(
            field("pubsub#notification_type", "list-single", "The message type of notifications", &[
                config.notification_type.as_str(),
            ]),
            &["headline", "normal"],
        ),
    ];
    for f in fields {
        x.append_child(f);
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::parse_element;

    fn form(xml: &str) -> Element {
        parse_element(xml).unwrap()
    }

    #[test]
    fn publish_options_parse_and_compare() {
        let x = form(
            "<x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
             <field var='pubsub#access_model'><value>open</value></field>\
             <field var='pubsub#max_items'><value>max</value></field>\
             <field var='pubsub#persist_items'><value>true</value></field></x>",
        );
        let submitted = parse_submitted(&x, PUBLISH_OPTIONS).unwrap().unwrap();
        let s = settings(&submitted).unwrap();
        assert_eq!(s, [Setting::AccessModel(AccessModel::Open), Setting::MaxItems(None), Setting::PersistItems(true)]);
        let mut config = NodeConfig::default();
        assert!(!s.iter().all(|s| satisfied(&config, s, 256)));
        apply(&mut config, &s);
        assert!(s.iter().all(|s| satisfied(&config, s, 256)));
        // `max` and the server's limit are the same.
        config.max_items = Some(256);
        assert!(satisfied(&config, &Setting::MaxItems(None), 256));
        assert!(!satisfied(&config, &Setting::MaxItems(Some(10)), 256));
    }

    #[test]
    fn bad_forms() {
        let wrong_type = form(
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:other</value></field></x>",
        );
        assert!(parse_submitted(&wrong_type, PUBLISH_OPTIONS).is_err());
        let no_type = form("<x xmlns='jabber:x:data' type='submit'><field var='pubsub#access_model'><value>open</value></field></x>");
        assert!(parse_submitted(&no_type, PUBLISH_OPTIONS).is_err());
        let not_submit = form("<x xmlns='jabber:x:data' type='form'/>");
        assert!(parse_submitted(&not_submit, PUBLISH_OPTIONS).is_err());
        let cancel = form("<x xmlns='jabber:x:data' type='cancel'/>");
        assert_eq!(parse_submitted(&cancel, NODE_CONFIG).unwrap(), None);
        let unknown = Submitted { fields: vec![("pubsub#frobnicate".into(), vec!["1".into()])] };
        assert_eq!(settings(&unknown), Err(FieldError::Unsupported("pubsub#frobnicate".into())));
        let model = Submitted { fields: vec![("pubsub#access_model".into(), vec!["authorize".into()])] };
        assert_eq!(settings(&model), Err(FieldError::UnsupportedAccessModel("authorize".into())));
        for (var, value) in [("pubsub#max_items", "lots"), ("pubsub#max_items", "0"), ("pubsub#persist_items", "yes")] {
            let bad = Submitted { fields: vec![(var.into(), vec![value.into()])] };
            assert_eq!(settings(&bad), Err(FieldError::Invalid(var.into())), "{var}={value}");
        }
        let fixed = Submitted { fields: vec![("pubsub#publish_model".into(), vec!["open".into()])] };
        assert!(settings(&fixed).is_err());
    }

    #[test]
    fn form_round_trip() {
        let mut config = NodeConfig { access_model: AccessModel::Roster, roster_groups: vec!["Friends".into()], ..NodeConfig::default() };
        config.max_items = None;
        let mut x = config_form(&config, NODE_CONFIG, "form");
        xml::set_attr(&mut x, "type", "submit");
        let submitted = parse_submitted(&x, NODE_CONFIG).unwrap().unwrap();
        let mut back = NodeConfig::default();
        apply(&mut back, &settings(&submitted).unwrap());
        assert_eq!(back, config);
    }
}
