//! XEP-0313 queries on an archive, whoever owns it (an account, a room): the query form
//! and RSM parsed (`parse.rs`), a page read by ranges of the store's index, the results
//! written to the querier and the `<fin/>` answered. Used by the MAM module (an account's
//! own archive) and the MUC module (a room's).

mod parse;

use jid::{BareJid, Jid};

pub use parse::{form, stamp};
use parse::{Before, Query};

use crate::modules::{Ctx, IqResult};
use crate::stanza::{Condition, Stanza, StanzaError};
use crate::storage::{ArchiveRange, ArchiveStore, ArchivedMessage};
use crate::xml::{self, Element, ns};

pub const MAM: &str = "urn:xmpp:mam:2";
pub const RSM: &str = "http://jabber.org/protocol/rsm";
const FORWARD: &str = "urn:xmpp:forward:0";

/// Rows read from the store at a time while a page is assembled.
const CHUNK: usize = 50;
/// Stanza bytes one page holds at most (at least one message): a page of the largest
/// messages stays a few megabytes, not `max_page` times the stanza size limit.
const PAGE_BYTES: usize = 1 << 20;
/// RSM `<index/>` is served by skipping that many entries of the index: up to this many.
const MAX_INDEX: usize = 10_000;

/// §4: run a query on `owner`'s archive (an account's or a room's), write its results to
/// `querier` from `owner`, answer with `<fin/>`. Who may query is the caller's to check.
pub async fn run(ctx: &Ctx, store: &ArchiveStore, owner: &BareJid, payload: &Element, max_page: usize, querier: &Jid) -> IqResult {
    let q = parse::parse(payload, max_page)?;
    if q.rsm.index.is_some_and(|i| i > MAX_INDEX) {
        // XEP-0059 §2.6: an index that is costly to find may be refused.
        return Err(StanzaError::new(Condition::FeatureNotImplemented)
            .with_text(format!("RSM <index/> is served up to {MAX_INDEX}; page with <after/> or <before/>")));
    }
    // Read what was accepted before the query, e.g. the message whose stanza-id the
    // client is asking after.
    store.committed().await;
    let mut range = ArchiveRange { with: q.with.clone(), from_ts: q.start.unwrap_or(i64::MIN), to_ts: q.end.unwrap_or(i64::MAX), only: Vec::new() };
    // §4.1.3, §4.3.2: every id named must be in the archive.
    let position = |id: String| {
        let store = store.clone();
        let owner = owner.clone();
        async move { store.position(&owner, &id).await?.ok_or_else(StanzaError::item_not_found) }
    };
    if let Some(id) = q.after_id.clone() {
        range.from_ts = range.from_ts.max(position(id).await?.saturating_add(1));
    }
    if let Some(id) = q.before_id.clone() {
        range.to_ts = range.to_ts.min(position(id).await?.saturating_sub(1));
    }
    if let Some(id) = q.rsm.after.clone() {
        range.from_ts = range.from_ts.max(position(id).await?.saturating_add(1));
    }
    if let Some(Before::Id(id)) = q.rsm.before.clone() {
        range.to_ts = range.to_ts.min(position(id).await?.saturating_sub(1));
    }
    if !q.ids.is_empty() {
        range.only = store.positions(owner, &q.ids).await?.ok_or_else(StanzaError::item_not_found)?;
    }
    let backward = q.rsm.before.is_some();
    let limit = q.rsm.max.unwrap_or(max_page);
    let offset = q.rsm.index.unwrap_or(0);
    let total = if q.is_whole_archive() { Some(store.count(owner).await?) } else { None };
    let (page, complete) = page(store, owner, &range, backward, limit, offset).await?;
    let first_index = if let Some(index) = q.rsm.index {
        Some(index as i64)
    } else if !backward && q.rsm.after.is_none() {
        Some(0)
    } else if q.rsm.before == Some(Before::Last) {
        // The last page of the whole archive starts this far from its beginning.
        total.map(|t| t - page.len() as i64)
    } else {
        None
    };
    let fin = fin(&page, complete, total, first_index);
    let mut page = page;
    if q.flip {
        page.reverse();
    }
    // The results' own ids: one random part per query and a counter, rather than a call
    // of the OS's random source for each.
    let ids = crate::stanza::new_id();
    for (i, message) in page.into_iter().enumerate() {
        let Some(result) = result_message(owner, &q, message, format!("{ids}-{i}")) else { continue };
        ctx.reply(Stanza::new(result, Jid::from(owner.clone()), querier.clone())).await;
    }
    Ok(Some(fin))
}

/// Up to `limit` messages of `range` after skipping `offset`, oldest first, from the
/// oldest end or (`backward`) the newest, within [`PAGE_BYTES`]; and whether the range
/// has no more in that direction.
async fn page(store: &ArchiveStore, owner: &BareJid, range: &ArchiveRange, backward: bool, limit: usize, offset: usize) -> Result<(Vec<ArchivedMessage>, bool), StanzaError> {
    if limit == 0 {
        // XEP-0059 §2.7: a count, no items; complete only if there is nothing at all.
        let any = store.page(owner, range, backward, 1, offset).await?;
        return Ok((Vec::new(), any.is_empty()));
    }
    let mut page: Vec<ArchivedMessage> = Vec::new();
    let mut bytes = 0;
    let mut rest = range.clone();
    let mut skip = offset;
    let complete = loop {
        let want = (limit - page.len()).min(CHUNK);
        // One more than wanted tells whether the range goes on.
        let rows = store.page(owner, &rest, backward, want + 1, skip).await?;
        skip = 0;
        let more = rows.len() > want;
        let mut full = false;
        for row in rows.into_iter().take(want) {
            if !page.is_empty() && bytes + row.stanza.len() > PAGE_BYTES {
                full = true;
                break;
            }
            bytes += row.stanza.len();
            if backward {
                rest.to_ts = row.ts - 1;
            } else {
                rest.from_ts = row.ts + 1;
            }
            page.push(row);
        }
        if full {
            break false;
        }
        if !more {
            break true;
        }
        if page.len() >= limit {
            break false;
        }
    };
    if backward {
        page.reverse();
    }
    Ok((page, complete))
}

/// `<message><result><forwarded><delay/>original</forwarded></result></message>` (§4.2).
/// The original goes in as it was stored when the store knows it for the server's own
/// serialisation of it; else (rows from before that was recorded) it is parsed, which a
/// row that does not parse fails.
fn result_message(owner: &BareJid, q: &Query, mut message: ArchivedMessage, stanza_id: String) -> Option<Element> {
    let (ts, id) = (message.ts, std::mem::take(&mut message.id));
    let mut forwarded = Element::bare("forwarded", FORWARD);
    forwarded.append_child(xml::element("delay", ns::DELAY, &[("stamp", &stamp(ts))]));
    match message.into_stanza() {
        Ok(serialised) => forwarded.append_serialised(serialised),
        Err(text) => match xml::parse_element(&text) {
            Ok(original) => {
                forwarded.append_child(original);
            }
            Err(e) => {
                tracing::error!(error = %e, %owner, %id, "unreadable archived message skipped");
                return None;
            }
        },
    }
    let mut result = xml::element("result", MAM, &[("id", &id)]);
    if let Some(queryid) = &q.queryid {
        xml::set_attr(&mut result, "queryid", queryid.as_str());
    }
    result.append_child(forwarded);
    let mut el = xml::element("message", ns::CLIENT, &[("id", &stanza_id)]);
    el.append_child(result);
    Some(el)
}

/// `<fin/>` with the RSM `<set/>` of the page (§4.3.2, XEP-0059 §2.2).
fn fin(page: &[ArchivedMessage], complete: bool, total: Option<i64>, first_index: Option<i64>) -> Element {
    let mut fin = xml::element("fin", MAM, &[("complete", if complete { "true" } else { "false" })]);
    let mut set = Element::bare("set", RSM);
    if let (Some(first), Some(last)) = (page.first(), page.last()) {
        let mut el = xml::text_element("first", RSM, &first.id);
        if let Some(index) = first_index {
            xml::set_attr(&mut el, "index", index.to_string());
        }
        set.append_child(el);
        set.append_child(xml::text_element("last", RSM, &last.id));
    }
    if let Some(total) = total {
        set.append_child(xml::text_element("count", RSM, &total.to_string()));
    }
    fin.append_child(set);
    fin
}

