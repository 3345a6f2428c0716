//! Entity time (XEP-0202) of the server, in UTC.

use std::sync::Arc;

use crate::xml::Element;

use super::{Ctx, Deps, IqRequest, IqResult, Module, Registrar, Scope};
use crate::stanza::{IqType, StanzaError};
use crate::xml::{self, ns};

pub struct EntityTime;

impl Module for EntityTime {
    const NAME: &'static str = "time";

    fn build(_: &Deps) -> Self {
        EntityTime
    }

    fn register(self: Arc<Self>, reg: &mut Registrar) {
        reg.iq(Scope::Server, IqType::Get, "time", ns::TIME, &self, Self::time);
    }
}

impl EntityTime {
    async fn time(self: Arc<Self>, _: Ctx, _: IqRequest) -> IqResult {
        let now = ::time::OffsetDateTime::now_utc();
        // XEP-0082 DateTime with milliseconds.
        let utc = now
            .format(&::time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            ))
            .map_err(|_| StanzaError::internal())?;
        let mut el = Element::bare("time", ns::TIME);
        el.append_child(xml::text_element("tzo", ns::TIME, "+00:00"));
        el.append_child(xml::text_element("utc", ns::TIME, &utc));
        Ok(Some(el))
    }
}
