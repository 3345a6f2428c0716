//! XMPP Ping (XEP-0199): the server answers pings to itself and to accounts. Pinging silent
//! clients is the c2s session's job (it owns the timers).

use std::sync::Arc;

use super::{Ctx, Deps, IqRequest, IqResult, Module, Registrar, Scope};
use crate::stanza::IqType;
use crate::xml::ns;

pub struct Ping;

impl Module for Ping {
    const NAME: &'static str = "ping";

    fn build(_: &Deps) -> Self {
        Ping
    }

    fn register(self: Arc<Self>, reg: &mut Registrar) {
        reg.iq(Scope::Server, IqType::Get, "ping", ns::PING, &self, Self::pong);
        reg.iq(Scope::Account, IqType::Get, "ping", ns::PING, &self, Self::pong);
    }
}

impl Ping {
    async fn pong(self: Arc<Self>, _: Ctx, _: IqRequest) -> IqResult {
        Ok(None)
    }
}
