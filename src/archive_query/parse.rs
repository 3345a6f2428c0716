//! What a client asks of the archive: the XEP-0313 query form (§4.1), its RSM `<set/>`
//! (XEP-0059) and `<flip-page/>`, parsed into a [`Query`], or the stanza error the spec
//! gives for the input. Pure: no storage, no I/O.

use jid::Jid;

use super::{MAM, RSM};
use crate::stanza::{Condition, StanzaError};
use crate::xml::{Element, ns};

/// The XEP-0122 validation namespace, for the open list of the `ids` field.
const XDATA_VALIDATE: &str = "http://jabber.org/protocol/xdata-validate";

/// A query, checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    pub queryid: Option<String>,
    pub with: Option<Jid>,
    /// `start` and `end` in microseconds since the epoch, both included.
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub after_id: Option<String>,
    pub before_id: Option<String>,
    /// Only these archive ids (empty: any).
    pub ids: Vec<String>,
    pub rsm: Rsm,
    /// Send the page newest first (§4.3.4); what the page holds does not change.
    pub flip: bool,
}

impl Query {
    /// No filter at all: the result set is the whole archive, whose size is known.
    pub fn is_whole_archive(&self) -> bool {
        self.with.is_none() && self.start.is_none() && self.end.is_none() && self.after_id.is_none() && self.before_id.is_none() && self.ids.is_empty()
    }
}

/// XEP-0059 `<set/>` in a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rsm {
    /// `<max/>`, already at most the server's page size.
    pub max: Option<usize>,
    pub after: Option<String>,
    pub before: Option<Before>,
    pub index: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Before {
    /// An empty `<before/>`: the last page (§4.3.3, XEP-0059 §2.5).
    Last,
    /// The page before this id.
    Id(String),
}

fn bad(text: &str) -> StanzaError {
    StanzaError::bad_request(text.to_string())
}

/// Parse `<query xmlns='urn:xmpp:mam:2'/>` of an IQ set. `max_page` clamps `<max/>`.
pub fn parse(query: &Element, max_page: usize) -> Result<Query, StanzaError> {
    if query.attr("node").is_some() {
        // XEP-0313 §7.1.3 reserves 'node' for pubsub archives (XEP-0442); an account has none.
        return Err(StanzaError::new(Condition::FeatureNotImplemented).with_text("an account's archive has no nodes"));
    }
    let mut q = Query { queryid: query.attr("queryid").map(str::to_string), ..Query::default() };
    let mut forms = query.children().filter(|c| c.is("x", ns::DATA_FORMS));
    if let Some(form) = forms.next() {
        parse_form(form, &mut q, max_page)?;
    }
    if forms.next().is_some() {
        return Err(bad("one data form at most"));
    }
    match query.get_child("set", RSM) {
        Some(set) => q.rsm = parse_rsm(set, max_page)?,
        // COMPAT(profanity 0.13): its next-page query puts the RSM <after/> straight in the
        // query, without its <set/>; read as the RSM it is meant as rather than answering
        // the first page again (which Profanity shows twice).
        None if query.children().any(|c| c.has_ns(RSM)) => q.rsm = parse_rsm(query, max_page)?,
        None => {}
    }
    q.flip = query.has_child("flip-page", MAM);
    if q.rsm.after.is_some() && q.rsm.before.is_some() {
        // XEP-0313 §4.3.2: RSM leaves <before/> with <after/> undefined; ranges between two
        // ids are asked with the after-id and before-id fields.
        return Err(bad("RSM <after/> and <before/> together are not supported: use the after-id and before-id fields"));
    }
    if q.rsm.index.is_some() && (q.rsm.after.is_some() || q.rsm.before.is_some()) {
        return Err(bad("RSM <index/> goes without <after/> or <before/>"));
    }
    Ok(q)
}

fn parse_form(form: &Element, q: &mut Query, max_page: usize) -> Result<(), StanzaError> {
    if form.attr("type").is_some_and(|t| t != "submit") {
        return Err(bad("the query form must be of type 'submit'"));
    }
    let mut seen: Vec<&str> = Vec::new();
    for field in form.children().filter(|c| c.is("field", ns::DATA_FORMS)) {
        let var = field.attr("var").ok_or_else(|| bad("a form field without 'var'"))?;
        if seen.contains(&var) {
            return Err(bad(&format!("the field '{var}' is given twice")));
        }
        seen.push(var);
        let values: Vec<String> = field.children().filter(|c| c.is("value", ns::DATA_FORMS)).map(|v| v.text().trim().to_string()).collect();
        match var {
            "FORM_TYPE" => {
                if values.len() != 1 || values[0] != MAM {
                    return Err(bad("FORM_TYPE must be urn:xmpp:mam:2"));
                }
            }
            "with" => {
                if let Some(v) = single(var, &values)? {
                    q.with = Some(Jid::new(v).map_err(|_| StanzaError::new(Condition::JidMalformed).with_text("'with' is not a JID"))?);
                }
            }
            "start" => q.start = single(var, &values)?.map(|v| micros(var, v, Round::Up)).transpose()?,
            "end" => q.end = single(var, &values)?.map(|v| micros(var, v, Round::Down)).transpose()?,
            "after-id" => q.after_id = single(var, &values)?.map(str::to_string),
            "before-id" => q.before_id = single(var, &values)?.map(str::to_string),
            "ids" => {
                if values.iter().any(String::is_empty) {
                    return Err(bad("an empty id in 'ids'"));
                }
                if values.len() > max_page {
                    return Err(StanzaError::new(Condition::PolicyViolation)
                        .with_text(format!("at most {max_page} ids in one query")));
                }
                q.ids = values;
            }
            // §4.1.5: a field the server does not know is feature-not-implemented.
            other => {
                return Err(StanzaError::new(Condition::FeatureNotImplemented).with_text(format!("the field '{other}' is not supported")));
            }
        }
    }
    Ok(())
}

/// A single-valued field: none or an empty value is absent, more than one is an error.
fn single<'a>(var: &str, values: &'a [String]) -> Result<Option<&'a str>, StanzaError> {
    match values {
        [] => Ok(None),
        [v] if v.is_empty() => Ok(None),
        [v] => Ok(Some(v)),
        _ => Err(bad(&format!("the field '{var}' takes one value"))),
    }
}

#[derive(Clone, Copy)]
enum Round {
    Up,
    Down,
}

/// A XEP-0082 DateTime as microseconds since the epoch; a fraction finer than a
/// microsecond is rounded so that the bound keeps what it says (`start`: up, `end`: down).
fn micros(var: &str, text: &str, round: Round) -> Result<i64, StanzaError> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| bad(&format!("'{var}' is not a XEP-0082 date and time (such as 2010-06-07T00:00:00Z)")))?;
    let nanos = t.unix_timestamp_nanos();
    let us = match round {
        Round::Down => nanos.div_euclid(1000),
        Round::Up => (nanos + 999).div_euclid(1000),
    };
    Ok(i64::try_from(us).unwrap_or(if us < 0 { i64::MIN } else { i64::MAX }))
}

/// A non-negative integer of RSM. Digits beyond what fits are "very large", not an error.
fn count(name: &str, text: &str) -> Result<u64, StanzaError> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(&format!("RSM <{name}/> must be a non-negative integer")));
    }
    Ok(text.parse::<u64>().unwrap_or(u64::MAX))
}

fn parse_rsm(set: &Element, max_page: usize) -> Result<Rsm, StanzaError> {
    let mut rsm = Rsm::default();
    if let Some(max) = set.get_child("max", RSM) {
        // §4.3.1: the server may limit a page, whatever the client asked.
        rsm.max = Some(usize::try_from(count("max", &max.text())?).unwrap_or(usize::MAX).min(max_page));
    }
    if let Some(after) = set.get_child("after", RSM) {
        let id = after.text().trim().to_string();
        if id.is_empty() {
            return Err(bad("RSM <after/> needs an id"));
        }
        rsm.after = Some(id);
    }
    if let Some(before) = set.get_child("before", RSM) {
        let id = before.text().trim().to_string();
        rsm.before = Some(if id.is_empty() { Before::Last } else { Before::Id(id) });
    }
    if let Some(index) = set.get_child("index", RSM) {
        rsm.index = Some(usize::try_from(count("index", &index.text())?).unwrap_or(usize::MAX));
    }
    Ok(rsm)
}

/// XEP-0082 DateTime of a position, to the microsecond (as ejabberd writes it), so that a
/// stamp given back as `start` or `end` selects exactly from or up to that message.
/// Written here rather than by `time`'s formatter, which cost a query more than the
/// stamps' share of its output (one per result).
pub fn stamp(ts: i64) -> String {
    let (secs, micros) = (ts.div_euclid(1_000_000), ts.rem_euclid(1_000_000));
    let (days, of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // The proleptic Gregorian date of a day since 1970-01-01, by 400-year eras of 146,097
    // days that start on 1 March (the leap day last).
    let z = days + 719_468;
    let (era, of_era) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let year_of_era = (of_era - of_era / 1_460 + of_era / 36_524 - of_era / 146_096) / 365;
    let day_of_year = of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let m = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * m + 2) / 5 + 1;
    let month = if m < 10 { m + 3 } else { m - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return "1970-01-01T00:00:00.000000Z".into();
    }
    let mut out = String::with_capacity(27);
    let mut digits = |n: i64, width: u32, after: char| {
        for i in (0..width).rev() {
            out.push(char::from(b'0' + (n / 10i64.pow(i) % 10) as u8));
        }
        out.push(after);
    };
    digits(year, 4, '-');
    digits(month, 2, '-');
    digits(day, 2, 'T');
    digits(of_day / 3_600, 2, ':');
    digits(of_day / 60 % 60, 2, ':');
    digits(of_day % 60, 2, '.');
    digits(micros, 6, 'Z');
    out
}

/// The form a client may fill in (§4.1.5): the fields this server knows, none required.
pub fn form() -> Element {
    use crate::xml::{element, text_element};
    let mut x = element("x", ns::DATA_FORMS, &[("type", "form")]);
    let mut form_type = element("field", ns::DATA_FORMS, &[("type", "hidden"), ("var", "FORM_TYPE")]);
    form_type.append_child(text_element("value", ns::DATA_FORMS, MAM));
    x.append_child(form_type);
    for (kind, var) in [("jid-single", "with"), ("text-single", "start"), ("text-single", "end"), ("text-single", "before-id"), ("text-single", "after-id")] {
        x.append_child(element("field", ns::DATA_FORMS, &[("type", kind), ("var", var)]));
    }
    // §4.1.5: the list of ids is open to any value, and never enumerated.
    let mut ids = element("field", ns::DATA_FORMS, &[("type", "list-multi"), ("var", "ids")]);
    let mut validate = element("validate", XDATA_VALIDATE, &[("datatype", "xs:string")]);
    validate.append_child(Element::bare("open", XDATA_VALIDATE));
    ids.append_child(validate);
    x.append_child(ids);
    let mut query = Element::bare("query", MAM);
    query.append_child(x);
    query
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::parse_element;

    fn q(inner: &str) -> Result<Query, StanzaError> {
        parse(&parse_element(&format!("<query xmlns='urn:xmpp:mam:2' queryid='f27'>{inner}</query>")).unwrap(), 250)
    }

    fn form(fields: &str) -> String {
        format!(
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>{fields}</x>"
        )
    }

    fn condition(r: Result<Query, StanzaError>) -> &'static str {
        r.unwrap_err().condition.name()
    }

    #[test]
    fn the_spec_examples_parse() {
        let plain = q("").unwrap();
        assert_eq!(plain.queryid.as_deref(), Some("f27"));
        assert!(plain.is_whole_archive());
        let with = q(&form("<field var='with'><value>juliet@capulet.lit</value></field>")).unwrap();
        assert_eq!(with.with.unwrap().as_str(), "juliet@capulet.lit");
        let span = q(&form("<field var='start'><value>2010-06-07T00:00:00Z</value></field><field var='end'><value>2010-07-07T13:23:54Z</value></field>")).unwrap();
        assert_eq!(span.start, Some(1_275_868_800_000_000));
        assert_eq!(span.end, Some(1_278_509_034_000_000));
        let ids = q(&form("<field var='after-id'><value>28482-98726-73623</value></field><field var='before-id'><value>09af3-cc343-b409f</value></field>")).unwrap();
        assert_eq!((ids.after_id.as_deref(), ids.before_id.as_deref()), (Some("28482-98726-73623"), Some("09af3-cc343-b409f")));
        let one = q(&form("<field var='ids'><value>28482-98726-73623</value></field>")).unwrap();
        assert_eq!(one.ids, ["28482-98726-73623"]);
        let page = q(&format!("{}<set xmlns='http://jabber.org/protocol/rsm'><max>10</max><after>09af3-cc343-b409f</after></set><flip-page/>", form(""))).unwrap();
        assert_eq!(page.rsm, Rsm { max: Some(10), after: Some("09af3-cc343-b409f".into()), before: None, index: None });
        assert!(page.flip);
        let last = q("<set xmlns='http://jabber.org/protocol/rsm'><max>10</max><before/></set>").unwrap();
        assert_eq!(last.rsm.before, Some(Before::Last));
    }

    #[test]
    fn bad_input_gets_the_right_error() {
        assert_eq!(condition(q(&form("<field var='{http://example.com/}free-text-search'><value>x</value></field>"))), "feature-not-implemented");
        assert_eq!(condition(q(&form("<field var='include-groupchat'><value>true</value></field>"))), "feature-not-implemented");
        assert_eq!(condition(q(&form("<field var='start'><value>yesterday</value></field>"))), "bad-request");
        assert_eq!(condition(q(&form("<field var='end'><value>2010-13-07T00:00:00Z</value></field>"))), "bad-request");
        assert_eq!(condition(q(&form("<field var='with'><value>a@b@c</value></field>"))), "jid-malformed");
        assert_eq!(condition(q(&form("<field var='with'><value>a@b</value><value>c@d</value></field>"))), "bad-request");
        assert_eq!(condition(q("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:xmpp:mam:1</value></field></x>")), "bad-request");
        assert_eq!(condition(q("<x xmlns='jabber:x:data' type='form'/>")), "bad-request");
        for bad in ["-1", "ten", "", "1.5", " -0"] {
            let r = q(&format!("<set xmlns='http://jabber.org/protocol/rsm'><max>{bad}</max></set>"));
            assert_eq!(condition(r), "bad-request", "max {bad:?}");
            let r = q(&format!("<set xmlns='http://jabber.org/protocol/rsm'><index>{bad}</index></set>"));
            assert_eq!(condition(r), "bad-request", "index {bad:?}");
        }
        assert_eq!(condition(q("<set xmlns='http://jabber.org/protocol/rsm'><after>a</after><before>b</before></set>")), "bad-request");
        assert_eq!(condition(q("<set xmlns='http://jabber.org/protocol/rsm'><after/></set>")), "bad-request");
        let many: String = (0..251).map(|i| format!("<value>{i}</value>")).collect();
        assert_eq!(condition(q(&form(&format!("<field var='ids'>{many}</field>")))), "policy-violation");
        assert_eq!(condition(parse(&parse_element("<query xmlns='urn:xmpp:mam:2' node='x'/>").unwrap(), 250)), "feature-not-implemented");
    }

    #[test]
    fn max_is_clamped() {
        for (given, got) in [("0", 0), ("7", 7), ("250", 250), ("251", 250), ("99999999999999999999999999", 250)] {
            let r = q(&format!("<set xmlns='http://jabber.org/protocol/rsm'><max>{given}</max></set>")).unwrap();
            assert_eq!(r.rsm.max, Some(got), "{given}");
        }
    }

    #[test]
    fn bounds_round_inwards_and_stamps_round_trip() {
        let r = q(&form("<field var='start'><value>2010-06-07T00:00:00.0000001Z</value></field><field var='end'><value>2010-06-07T00:00:00.0000019+00:00</value></field>")).unwrap();
        assert_eq!(r.start, Some(1_275_868_800_000_001));
        assert_eq!(r.end, Some(1_275_868_800_000_001));
        let ts = 1_278_509_034_123_456;
        assert_eq!(stamp(ts), "2010-07-07T13:23:54.123456Z");
        let back = q(&form(&format!("<field var='start'><value>{}</value></field>", stamp(ts)))).unwrap();
        assert_eq!(back.start, Some(ts));
    }

    /// The same stamps as `time` writes, from year 0 to 9999, leap days and the ends of days,
    /// months and years included.
    #[test]
    fn stamps_are_xep_0082() {
        let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
        let by_time = |ts: i64| time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts) * 1000).unwrap().format(&format).unwrap();
        let (first, last) = (-62_167_219_200_000_000i64, 253_402_300_799_999_999i64);
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut cases = vec![first, last, 0, -1, 1, 951_782_399_999_999, 951_782_400_000_000, 951_868_799_999_999, 4_107_542_400_000_000];
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push(first + (x % (last - first) as u64) as i64);
        }
        for ts in cases {
            assert_eq!(stamp(ts), by_time(ts), "{ts}");
        }
        assert_eq!(stamp(first - 1), "1970-01-01T00:00:00.000000Z");
        assert_eq!(stamp(i64::MIN), "1970-01-01T00:00:00.000000Z");
        assert_eq!(stamp(i64::MAX), "1970-01-01T00:00:00.000000Z");
    }
}
