"""XEP-0084 User Avatar through slixmpp's own plugin (`xep_0084`: publish_avatar,
publish_avatar_metadata, retrieve_avatar, stop, the avatar_metadata_publish event), and the
server's conversion to and from the vCard (XEP-0398) seen where legacy clients look: the
XEP-0153 hash in presence and the vCard's PHOTO (`xep_0054`)."""

import hashlib
import struct
import zlib

from harness import DEFAULT_PLUGINS, NS_CLIENT, befriend, is_stanza, publish_options, text_of, xml_of, xmpp_test

METADATA = "urn:xmpp:avatar:metadata"
DATA = "urn:xmpp:avatar:data"
VCARD_UPDATE = "vcard-temp:x:update"
PUBSUB_EVENT = "http://jabber.org/protocol/pubsub#event"
PLUGINS = DEFAULT_PLUGINS + ("xep_0004", "xep_0060", "xep_0163", "xep_0084")


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A valid PNG of one colour (so that a client could show it)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def photo_hash(presence) -> str | None:
    """The XEP-0153 <photo/> of a presence: None without the update element, '' if empty."""
    x = xml_of(presence).find(f"{{{VCARD_UPDATE}}}x")
    if x is None:
        return None
    p = x.find(f"{{{VCARD_UPDATE}}}photo")
    return None if p is None else (p.text or "")


def metadata_notification(owner: str):
    def pred(s) -> bool:
        x = xml_of(s)
        items = x.find(f"{{{PUBSUB_EVENT}}}event/{{{PUBSUB_EVENT}}}items")
        return x.tag == f"{{{NS_CLIENT}}}message" and x.get("from") == owner and items is not None \
            and items.get("node") == METADATA
    pred.__doc__ = f"an avatar metadata notification from {owner}"
    return pred


def infos(notification) -> list[dict]:
    return [dict(i.attrib) for i in xml_of(notification).iter(f"{{{METADATA}}}info")]


@xmpp_test(timeout=50)
async def test_avatar_published_with_xep0084_reaches_vcard_and_presence(net):
    alice_acc = net.account("alice")
    alice = await net.online(alice_acc, "phone", plugins=PLUGINS)
    bob = await net.online_notified(net.account("bob"), "r", [METADATA], plugins=PLUGINS)
    await befriend(alice, bob)
    avatars = alice.xmpp.plugin["xep_0084"]

    # §4.1, §4.2 as Conversations does it: data then metadata, both open (an avatar anyone may
    # see is what the server copies to the world-readable vCard, XEP-0398 §6).
    image = png(4, 3, (200, 30, 60))
    sha1 = hashlib.sha1(image).hexdigest()
    assert avatars.generate_id(image) == sha1
    res = await avatars.publish_avatar(image, options=publish_options(access_model="open"), timeout=5)
    assert res["type"] == "result", text_of(res)
    got = bob.event("avatar_metadata_publish")
    # Width and height as text: slixmpp 1.17 puts ints into the attribute as they are and
    # then fails to serialise the stanza (see compat/slixmpp.md).
    res = await avatars.publish_avatar_metadata(
        {"id": sha1, "type": "image/png", "bytes": len(image), "width": "4", "height": "3"},
        options=publish_options(access_model="open"), timeout=5)
    assert res["type"] == "result", text_of(res)

    # The contact, whose caps ask for metadata (the plugin adds the interest), is notified.
    note = await bob.wait_for(metadata_notification(alice_acc.jid))
    await bob.wait_event(got, "slixmpp's avatar_metadata_publish event")
    assert infos(note) == [{"id": sha1, "type": "image/png", "bytes": str(len(image)), "width": "4", "height": "3"}], \
        text_of(note)
    # §4.4: and fetches the image by its id.
    data = await bob.xmpp.plugin["xep_0084"].retrieve_avatar(alice_acc.jid, sha1, timeout=5)
    items = list(data["pubsub"]["items"])
    assert len(items) == 1 and items[0]["id"] == sha1 and items[0]["avatar_data"]["value"] == image, text_of(data)

    # XEP-0398 §4.1: the vCard got the photo...
    vcard = await bob.xmpp.plugin["xep_0054"].get_vcard(alice_acc.jid, timeout=5)
    photo = vcard["vcard_temp"]["PHOTO"]
    assert photo["TYPE"] == "image/png" and photo["BINVAL"] == image, text_of(vcard)
    # ...and (§5, XEP-0153) alice's next presence carries its hash, stamped by the server.
    alice.xmpp.send_presence(pstatus="new avatar")
    pres = await bob.wait_for(lambda s: is_stanza("presence", type=None, frm=alice.jid)(s)
                              and xml_of(s).findtext(f"{{{NS_CLIENT}}}status") == "new avatar")
    assert photo_hash(pres) == sha1, text_of(pres)

    # Disabling the avatar (§4.5, empty metadata, the plugin's stop()): notified, the photo
    # leaves the vCard, presence says "no photo".
    await avatars.stop(timeout=5)
    note = await bob.wait_for(metadata_notification(alice_acc.jid))
    assert infos(note) == [], text_of(note)
    vcard = await bob.xmpp.plugin["xep_0054"].get_vcard(alice_acc.jid, timeout=5)
    assert not vcard["vcard_temp"]["PHOTO"]["BINVAL"], text_of(vcard)
    alice.xmpp.send_presence(pstatus="no avatar")
    pres = await bob.wait_for(lambda s: is_stanza("presence", type=None, frm=alice.jid)(s)
                              and xml_of(s).findtext(f"{{{NS_CLIENT}}}status") == "no avatar")
    assert photo_hash(pres) == "", text_of(pres)


@xmpp_test()
async def test_vcard_photo_reaches_xep0084_clients(net):
    """XEP-0398 §4.2: a legacy client sets its vCard photo; a XEP-0084 client sees the
    avatar (notification with the SHA-1 as id, the data fetched by slixmpp's plugin)."""
    alice_acc = net.account("alice")
    legacy = await net.online(alice_acc, "legacy", plugins=PLUGINS)
    bob = await net.online_notified(net.account("bob"), "r", [METADATA], plugins=PLUGINS)
    await befriend(legacy, bob)

    image = png(2, 2, (10, 120, 240))
    sha1 = hashlib.sha1(image).hexdigest()
    vc = legacy.xmpp.plugin["xep_0054"].make_vcard()
    vc["FN"] = "Alice"
    vc["PHOTO"]["TYPE"] = "image/png"
    vc["PHOTO"]["BINVAL"] = image
    await legacy.xmpp.plugin["xep_0054"].publish_vcard(vc, timeout=5)

    note = await bob.wait_for(metadata_notification(alice_acc.jid))
    (info,) = infos(note)
    assert info["id"] == sha1 and info["type"] == "image/png" and info["bytes"] == str(len(image)), text_of(note)
    data = await bob.xmpp.plugin["xep_0084"].retrieve_avatar(alice_acc.jid, sha1, timeout=5)
    assert [i["avatar_data"]["value"] for i in data["pubsub"]["items"]] == [image], text_of(data)
    # And the legacy client's own presence is stamped with the hash.
    legacy.xmpp.send_presence(pstatus="with photo")
    pres = await bob.wait_for(lambda s: is_stanza("presence", type=None, frm=legacy.jid)(s)
                              and xml_of(s).findtext(f"{{{NS_CLIENT}}}status") == "with photo")
    assert photo_hash(pres) == sha1, text_of(pres)
