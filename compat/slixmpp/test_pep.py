"""XEP-0163 PEP through slixmpp's own plugins (`xep_0060` publish with publish-options,
`xep_0163` interests in the XEP-0115 caps, `xep_0060` node events), the way OMEMO clients
use it: the device list `eu.siacs.conversations.axolotl.devicelist` published with
`pubsub#access_model=open`, a contact whose caps carry `…devicelist+notify` notified, a
stranger fetching it, a bundle fetched by item, options that do not match refused."""

from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0060.stanza import EventItem, Item
from slixmpp.xmlstream import ElementBase, register_stanza_plugin

from harness import (DEFAULT_PLUGINS, NS_CLIENT, NS_DELAY, befriend, publish_options, text_of, xml_of,
                     xmpp_test)

AXOLOTL = "eu.siacs.conversations.axolotl"
DEVICELIST = f"{AXOLOTL}.devicelist"
PUBSUB = "http://jabber.org/protocol/pubsub"
PUBSUB_EVENT = f"{PUBSUB}#event"
PUBSUB_ERRORS = f"{PUBSUB}#errors"
PLUGINS = DEFAULT_PLUGINS + ("xep_0004", "xep_0060", "xep_0163")


class DeviceList(ElementBase):
    """The OMEMO (0.3, `eu.siacs.conversations.axolotl`) device list payload."""
    namespace = AXOLOTL
    name = "list"
    plugin_attrib = "omemo_devicelist"
    interfaces = {"devices"}

    def get_devices(self) -> list[int]:
        return [int(d.get("id")) for d in self.xml.findall(f"{{{AXOLOTL}}}device")]

    def set_devices(self, ids) -> None:
        for d in self.xml.findall(f"{{{AXOLOTL}}}device"):
            self.xml.remove(d)
        for i in ids:
            self.xml.append(self.xml.makeelement(f"{{{AXOLOTL}}}device", {"id": str(i)}))


register_stanza_plugin(Item, DeviceList)
register_stanza_plugin(EventItem, DeviceList)


def devicelist(ids) -> DeviceList:
    dl = DeviceList()
    dl["devices"] = ids
    return dl


def bundle(device: int):
    """A (dummy-keyed) OMEMO bundle element, as clients publish to `…bundles:<device>`."""
    from xml.etree import ElementTree as ET
    b = ET.Element(f"{{{AXOLOTL}}}bundle")
    ET.SubElement(b, f"{{{AXOLOTL}}}signedPreKeyPublic", signedPreKeyId="1").text = "BXNpZ25lZA=="
    ET.SubElement(b, f"{{{AXOLOTL}}}signedPreKeySignature").text = "c2lnbmF0dXJl"
    ET.SubElement(b, f"{{{AXOLOTL}}}identityKey").text = f"aWRlbnRpdHkt{device}"
    prekeys = ET.SubElement(b, f"{{{AXOLOTL}}}prekeys")
    for i in (1, 2):
        ET.SubElement(prekeys, f"{{{AXOLOTL}}}preKeyPublic", preKeyId=str(i)).text = f"cHJla2V5{i}"
    return b


async def with_devicelist_interest(net, account, resource):
    """Online with `…devicelist+notify` in its caps, slixmpp raising `omemo_devicelist_publish`
    for the notifications."""
    c = await net.online_notified(account, resource, [DEVICELIST], plugins=PLUGINS)
    c.xmpp.plugin["xep_0060"].map_node_event(DEVICELIST, "omemo_devicelist")
    return c


def event_of(msg, node: str):
    """The <items/> of a pubsub#event notification for `node`, or None."""
    items = xml_of(msg).find(f"{{{PUBSUB_EVENT}}}event/{{{PUBSUB_EVENT}}}items")
    return items if items is not None and items.get("node") == node else None


def notification(owner: str, node: str):
    def pred(s) -> bool:
        x = xml_of(s)
        return x.tag == f"{{{NS_CLIENT}}}message" and x.get("from") == owner and event_of(s, node) is not None
    pred.__doc__ = f"a {node} notification from {owner}"
    return pred


def devices_in(items_el) -> list[int]:
    return [int(d.get("id")) for d in items_el.iter(f"{{{AXOLOTL}}}device")]


@xmpp_test(timeout=50)
async def test_pep_omemo_devicelist_with_publish_options_and_notify(net):
    alice_acc = net.account("alice")
    alice = await net.online(alice_acc, "phone", plugins=PLUGINS)
    bob_acc = net.account("bob")
    bob = await with_devicelist_interest(net, bob_acc, "laptop")
    dave = await net.online(net.account("dave"), "r", plugins=PLUGINS)   # a contact, no +notify
    carol = await net.online(net.account("carol"), "r", plugins=PLUGINS)  # a stranger
    await befriend(alice, bob)
    await befriend(alice, dave)

    # XEP-0163 §6: the account is a PEP service that takes publish-options.
    info = await alice.xmpp.plugin["xep_0030"].get_info(jid=alice_acc.jid, timeout=5)
    assert ("pubsub", "pep") in {(i[0], i[1]) for i in info["disco_info"]["identities"]}, text_of(info)
    assert f"{PUBSUB}#publish-options" in info["disco_info"]["features"], text_of(info)

    # Publish as OMEMO clients do: item 'current', access model open as a precondition.
    got = bob.event("omemo_devicelist_publish")
    res = await alice.xmpp.plugin["xep_0060"].publish(
        None, DEVICELIST, id="current", payload=devicelist([1111]).xml,
        options=publish_options(access_model="open"), timeout=5)
    assert res["type"] == "result", text_of(res)
    published = xml_of(res).find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}publish")
    assert published is not None and published.get("node") == DEVICELIST, text_of(res)

    # §4: the contact whose caps ask for the node gets the notification, from the owner's
    # bare JID, with the payload (slixmpp's node event fires with it).
    note = await bob.wait_for(notification(alice_acc.jid, DEVICELIST))
    msg = await bob.wait_event(got, "slixmpp's omemo_devicelist_publish event")
    assert msg["pubsub_event"]["items"]["node"] == DEVICELIST
    item = event_of(note, DEVICELIST).find(f"{{{PUBSUB_EVENT}}}item")
    assert item.get("id") == "current" and devices_in(item) == [1111], text_of(note)
    assert xml_of(note).get("to") == bob.jid and xml_of(note).get("type") == "headline", text_of(note)
    # A contact without +notify and a stranger get none (filtered notifications).
    await dave.expect_none(notification(alice_acc.jid, DEVICELIST), 0.5, what="a notification without +notify")
    await carol.expect_none(notification(alice_acc.jid, DEVICELIST), 0.1, what="a notification to a stranger")

    # The bundle, also open; a stranger fetches the device list and the bundle (what an
    # OMEMO client does before its first message to someone).
    res = await alice.xmpp.plugin["xep_0060"].publish(
        None, f"{AXOLOTL}.bundles:1111", id="current", payload=bundle(1111),
        options=publish_options(access_model="open", persist_items="true"), timeout=5)
    assert res["type"] == "result", text_of(res)
    lst = await carol.xmpp.plugin["xep_0060"].get_items(alice_acc.jid, DEVICELIST, timeout=5)
    assert [i["omemo_devicelist"]["devices"] for i in lst["pubsub"]["items"]] == [[1111]], text_of(lst)
    b = await carol.xmpp.plugin["xep_0060"].get_item(alice_acc.jid, f"{AXOLOTL}.bundles:1111", "current", timeout=5)
    got_bundle = xml_of(b).find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}items/{{{PUBSUB}}}item/{{{AXOLOTL}}}bundle")
    assert got_bundle is not None and got_bundle.findtext(f"{{{AXOLOTL}}}identityKey") == "aWRlbnRpdHkt1111", text_of(b)
    assert len(got_bundle.findall(f"{{{AXOLOTL}}}prekeys/{{{AXOLOTL}}}preKeyPublic")) == 2, text_of(b)
    # Nobody asked for bundle notifications.
    await bob.expect_none(notification(alice_acc.jid, f"{AXOLOTL}.bundles:1111"), 0.3)

    # A second device: the list is replaced, notified again.
    await alice.xmpp.plugin["xep_0060"].publish(
        None, DEVICELIST, id="current", payload=devicelist([1111, 2222]).xml,
        options=publish_options(access_model="open"), timeout=5)
    note = await bob.wait_for(notification(alice_acc.jid, DEVICELIST))
    assert devices_in(event_of(note, DEVICELIST)) == [1111, 2222], text_of(note)

    # XEP-0060 §7.1.5: options that do not match the node are a precondition failure, and
    # the node is unchanged.
    try:
        await alice.xmpp.plugin["xep_0060"].publish(
            None, DEVICELIST, id="current", payload=devicelist([3333]).xml,
            options=publish_options(access_model="presence"), timeout=5)
        raise AssertionError("publish with mismatched publish-options succeeded")
    except IqError as e:
        err = e.iq
    assert err["error"]["condition"] == "conflict", text_of(err)
    assert xml_of(err).find(f"{{{NS_CLIENT}}}error/{{{PUBSUB_ERRORS}}}precondition-not-met") is not None, text_of(err)
    lst = await carol.xmpp.plugin["xep_0060"].get_items(alice_acc.jid, DEVICELIST, timeout=5)
    assert [i["omemo_devicelist"]["devices"] for i in lst["pubsub"]["items"]] == [[1111, 2222]], text_of(lst)

    # §4.3.2: another resource of the contact that comes online with +notify gets the last
    # published item, with a XEP-0203 delay giving the time of publication.
    tablet = await with_devicelist_interest(net, bob_acc, "tablet")
    last = await tablet.wait_for(notification(alice_acc.jid, DEVICELIST))
    assert devices_in(event_of(last, DEVICELIST)) == [1111, 2222], text_of(last)
    assert xml_of(last).find(f"{{{NS_DELAY}}}delay") is not None, text_of(last)
    assert xml_of(last).get("to") == tablet.jid, text_of(last)


@xmpp_test()
async def test_pep_default_access_is_presence(net):
    """Without publish-options a node gets the PEP default access model (presence): a
    contact reads it, a stranger is refused."""
    alice_acc = net.account("alice")
    alice = await net.online(alice_acc, "phone", plugins=PLUGINS)
    bob = await net.online(net.account("bob"), "r", plugins=PLUGINS)
    carol = await net.online(net.account("carol"), "r", plugins=PLUGINS)
    await befriend(alice, bob)
    node = "urn:example:starling-compat:mood"
    from xml.etree import ElementTree as ET
    payload = ET.Element(f"{{{node}}}mood")
    payload.text = "calm"
    res = await alice.xmpp.plugin["xep_0163"].publish(ElementBase(payload), node=node, timeout=5)
    assert res["type"] == "result", text_of(res)
    got = await bob.xmpp.plugin["xep_0060"].get_items(alice_acc.jid, node, timeout=5)
    assert xml_of(got).find(f".//{{{node}}}mood").text == "calm", text_of(got)
    try:
        await carol.xmpp.plugin["xep_0060"].get_items(alice_acc.jid, node, timeout=5)
        raise AssertionError("a stranger read a presence-access node")
    except IqError as e:
        assert e.iq["error"]["condition"] in ("not-authorized", "forbidden"), text_of(e.iq)
