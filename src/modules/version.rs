//! Software version (XEP-0092) of the server.

use std::sync::Arc;

use crate::xml::Element;

use super::{Ctx, Deps, IqRequest, IqResult, Module, Registrar, Scope};
use crate::stanza::IqType;
use crate::xml::{self, ns};

pub struct Version;

impl Module for Version {
    const NAME: &'static str = "version";

    fn build(_: &Deps) -> Self {
        Version
    }

    fn register(self: Arc<Self>, reg: &mut Registrar) {
        reg.iq(Scope::Server, IqType::Get, "query", ns::VERSION, &self, Self::version);
    }
}

impl Version {
    async fn version(self: Arc<Self>, _: Ctx, _: IqRequest) -> IqResult {
        let mut query = Element::bare("query", ns::VERSION);
        query.append_child(xml::text_element("name", ns::VERSION, "Starling"));
        query.append_child(xml::text_element("version", ns::VERSION, env!("CARGO_PKG_VERSION")));
        // The OS family only (as Prosody does), not its exact release.
        query.append_child(xml::text_element("os", ns::VERSION, std::env::consts::OS));
        Ok(Some(query))
    }
}
