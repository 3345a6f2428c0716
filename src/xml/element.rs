//! The XML tree every stanza is held in.
//!
//! Our own small type rather than minidom's, for three reasons that are about what a hostile
//! peer can make the server do:
//! * a namespace name is shared, not copied: every element of a parsed stanza in the same
//!   namespace points at one string (one allocation per distinct namespace, none at all for
//!   the well-known ones), so a long URI declared once and used by thousands of elements
//!   costs its length once, not once per element;
//! * the parser can charge a stanza for what its tree really holds (see `tree.rs`), because
//!   the layout is known and small;
//! * `ns()` lends the name instead of allocating a copy on every call.
//!
//! The API follows minidom's names (`bare`, `attr`, `is`, `get_child`, `append_child`…), so
//! code reads the same as with the crate most XMPP code in Rust uses.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::ns;

/// A namespace name. Cloning is cheap: well-known names are static and others are shared.
#[derive(Clone)]
pub struct Namespace(Repr);

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Namespace {
    /// The empty name: an unqualified attribute.
    pub const NONE: Namespace = Namespace(Repr::Static(""));
    /// `http://www.w3.org/XML/1998/namespace`, bound to the `xml` prefix.
    pub const XML: Namespace = Namespace(Repr::Static(ns::XML));

    /// A namespace for `name`: one of the static well-known names when it is one, otherwise
    /// a new shared string (callers that see the same name again should clone the result).
    pub fn new(name: &str) -> Namespace {
        match ns::well_known(name) {
            Some(s) => Namespace(Repr::Static(s)),
            None => Namespace(Repr::Shared(Arc::from(name))),
        }
    }

    pub const fn from_static(name: &'static str) -> Namespace {
        Namespace(Repr::Static(name))
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            Repr::Shared(s) => s,
        }
    }

    /// Bytes allocated for this name (0 for a static one).
    pub fn heap_bytes(&self) -> usize {
        match &self.0 {
            Repr::Static(_) => 0,
            // The string and the two reference counts in front of it.
            Repr::Shared(s) => s.len() + 2 * std::mem::size_of::<usize>(),
        }
    }

    /// The same allocation (or the same static string) as `other`.
    pub fn same_allocation(&self, other: &Namespace) -> bool {
        std::ptr::eq(self.as_str().as_ptr(), other.as_str().as_ptr()) && self.as_str().len() == other.as_str().len()
    }
}

impl std::ops::Deref for Namespace {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Namespace {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Namespace {
    fn eq(&self, other: &Self) -> bool {
        self.same_allocation(other) || self.as_str() == other.as_str()
    }
}
impl Eq for Namespace {}

impl Hash for Namespace {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl From<&'static str> for Namespace {
    fn from(s: &'static str) -> Self {
        Namespace::from_static(s)
    }
}

impl From<&Namespace> for Namespace {
    fn from(s: &Namespace) -> Self {
        s.clone()
    }
}

impl From<String> for Namespace {
    fn from(s: String) -> Self {
        Namespace::new(&s)
    }
}

/// One attribute. `ns` is [`Namespace::NONE`] for the usual unqualified attributes.
#[derive(Clone, PartialEq, Eq)]
pub struct Attr {
    pub ns: Namespace,
    pub name: Box<str>,
    pub value: Box<str>,
}

impl fmt::Debug for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ns.is_empty() {
            write!(f, "{}={:?}", self.name, self.value)
        } else {
            write!(f, "{{{}}}{}={:?}", self.ns.as_str(), self.name, self.value)
        }
    }
}

/// A child of an element: an element, a run of text, or an element already serialised.
#[derive(Clone, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
    /// Written out as it is; never made by the parser, and not an element to the methods
    /// that look at children (see [`Element::append_serialised`]).
    Serialised(Serialised),
}

impl Node {
    pub fn as_element(&self) -> Option<&Element> {
        match self {
            Node::Element(e) => Some(e),
            Node::Text(_) | Node::Serialised(_) => None,
        }
    }

    pub fn as_text(&self) -> Option<&str> {
        match self {
            Node::Text(t) => Some(t),
            Node::Element(_) | Node::Serialised(_) => None,
        }
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Element(e) => fmt::Debug::fmt(e, f),
            Node::Text(t) => fmt::Debug::fmt(t, f),
            Node::Serialised(s) => fmt::Debug::fmt(s, f),
        }
    }
}

/// An element as this server's writer serialises it on its own ([`Serialised::of`]):
/// well-formed, and self-contained: every namespace it uses is declared in it, its own
/// included (`xmlns=''` if it has none), and it uses no prefix bound outside it (no
/// `stream:`). Such text means the same written into any element, so it can be kept (the
/// message archive keeps messages so) and later written out as it is, without parsing it
/// into a tree and serialising that again ([`Element::append_serialised`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Serialised(String);

impl Serialised {
    pub fn of(el: &Element) -> Serialised {
        let mut out = Vec::new();
        super::writer::write_element(&mut out, el, "");
        if el.ns().is_empty() {
            // Written where a default namespace is in scope, it must not take it.
            let after_name = 1 + el.name().len();
            out.splice(after_name..after_name, *b" xmlns=''");
        }
        Serialised(String::from_utf8(out).expect("the writer only emits UTF-8"))
    }

    /// Text that [`Serialised::of`] made, kept and read back. Nothing here checks it (that
    /// would be the parse this type spares): the caller answers for where it comes from.
    pub(crate) fn known(text: String) -> Serialised {
        Serialised(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Debug for Serialised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serialised({:?})", self.0)
    }
}

/// An element: name, namespace, attributes in the order they were set, and children.
#[derive(Clone)]
pub struct Element {
    name: Box<str>,
    ns: Namespace,
    attrs: Vec<Attr>,
    content: Content,
}

/// The children of an element: its own, or shared with copies of it that differ only in
/// their attributes (one message to every occupant of a room, each copy addressed to one of
/// them). Shared children are written once, when shared, and every copy's serialisation
/// reuses those bytes ([`Element::share_content`]); changing a copy's children gives that
/// copy its own again.
#[derive(Clone)]
enum Content {
    Owned(Vec<Node>),
    Shared(Arc<SharedContent>),
}

struct SharedContent {
    nodes: Vec<Node>,
    /// The children as written where `ns` is the default namespace (inside the element when
    /// the element declares its namespace as the default one, as it does unless prefixed).
    ns: Namespace,
    written: Box<str>,
}

impl Content {
    fn nodes(&self) -> &Vec<Node> {
        match self {
            Content::Owned(nodes) => nodes,
            Content::Shared(shared) => &shared.nodes,
        }
    }

    fn nodes_mut(&mut self) -> &mut Vec<Node> {
        if let Content::Shared(shared) = self {
            let shared = std::mem::replace(shared, Arc::new(SharedContent { nodes: Vec::new(), ns: Namespace::NONE, written: Box::default() }));
            let nodes = Arc::try_unwrap(shared).map(|alone| alone.nodes).unwrap_or_else(|shared| shared.nodes.clone());
            *self = Content::Owned(nodes);
        }
        match self {
            Content::Owned(nodes) => nodes,
            Content::Shared(_) => unreachable!("made owned above"),
        }
    }
}

impl Element {
    /// An element with no attributes and no children.
    pub fn bare(name: impl Into<Box<str>>, ns: impl Into<Namespace>) -> Element {
        Element { name: name.into(), ns: ns.into(), attrs: Vec::new(), content: Content::Owned(Vec::new()) }
    }

    /// An element with these attributes (the parser's constructor: it has checked them).
    pub(crate) fn with_attrs(name: &str, ns: Namespace, attrs: Vec<Attr>) -> Element {
        Element { name: name.into(), ns, attrs, content: Content::Owned(Vec::new()) }
    }

    /// Slots allocated for children (for the parser's accounting).
    pub(crate) fn nodes_capacity(&self) -> usize {
        self.content.nodes().capacity()
    }

    /// The capacity of the last child if it is text (for the parser's accounting).
    pub(crate) fn last_text_capacity(&self) -> usize {
        match self.content.nodes().last() {
            Some(Node::Text(t)) => t.capacity(),
            _ => 0,
        }
    }

    pub fn builder(name: impl Into<Box<str>>, ns: impl Into<Namespace>) -> ElementBuilder {
        ElementBuilder { el: Element::bare(name, ns) }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ns(&self) -> &str {
        self.ns.as_str()
    }

    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    pub fn is(&self, name: &str, ns: &str) -> bool {
        &*self.name == name && self.ns.as_str() == ns
    }

    pub fn has_ns(&self, ns: &str) -> bool {
        self.ns.as_str() == ns
    }

    /// An unqualified attribute.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attr_ns("", name)
    }

    pub fn attr_ns(&self, ns: &str, name: &str) -> Option<&str> {
        self.attrs.iter().find(|a| &*a.name == name && a.ns.as_str() == ns).map(|a| &*a.value)
    }

    pub fn attrs(&self) -> std::slice::Iter<'_, Attr> {
        self.attrs.iter()
    }

    /// Set (or replace) an unqualified attribute.
    pub fn set_attr(&mut self, name: &str, value: impl Into<String>) {
        self.set_attr_ns(Namespace::NONE, name, value)
    }

    pub fn set_attr_ns(&mut self, ns: Namespace, name: &str, value: impl Into<String>) {
        let value = value.into().into_boxed_str();
        match self.attrs.iter_mut().find(|a| &*a.name == name && a.ns == ns) {
            Some(a) => a.value = value,
            None => self.attrs.push(Attr { ns, name: name.into(), value }),
        }
    }

    /// A copy of this element with its `to` attribute set to `to`: one per recipient of a
    /// broadcast, made with the room for that attribute at once (a clone then `set_attr`
    /// would grow the attribute list again); the children stay shared
    /// ([`Element::share_content`]).
    pub fn copy_to(&self, to: &str) -> Element {
        let mut attrs = Vec::with_capacity(self.attrs.len() + 1);
        attrs.extend(self.attrs.iter().filter(|a| !(a.ns.is_empty() && &*a.name == "to")).cloned());
        attrs.push(Attr { ns: Namespace::NONE, name: "to".into(), value: to.into() });
        Element { name: self.name.clone(), ns: self.ns.clone(), attrs, content: self.content.clone() }
    }

    /// Remove an unqualified attribute; its value if it was there.
    pub fn remove_attr(&mut self, name: &str) -> Option<Box<str>> {
        let i = self.attrs.iter().position(|a| &*a.name == name && a.ns.is_empty())?;
        Some(self.attrs.remove(i).value)
    }

    pub fn nodes(&self) -> std::slice::Iter<'_, Node> {
        self.content.nodes().iter()
    }

    pub fn children(&self) -> impl Iterator<Item = &Element> {
        self.nodes().filter_map(Node::as_element)
    }

    pub fn children_mut(&mut self) -> impl Iterator<Item = &mut Element> {
        self.content.nodes_mut().iter_mut().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) | Node::Serialised(_) => None,
        })
    }

    pub fn get_child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.children().find(|c| c.is(name, ns))
    }

    pub fn get_child_mut(&mut self, name: &str, ns: &str) -> Option<&mut Element> {
        self.children_mut().find(|c| c.is(name, ns))
    }

    pub fn has_child(&self, name: &str, ns: &str) -> bool {
        self.get_child(name, ns).is_some()
    }

    /// Remove the first child called `name` in `ns`.
    pub fn remove_child(&mut self, name: &str, ns: &str) -> Option<Element> {
        let i = self.nodes().position(|n| n.as_element().is_some_and(|e| e.is(name, ns)))?;
        match self.content.nodes_mut().remove(i) {
            Node::Element(e) => Some(e),
            Node::Text(_) | Node::Serialised(_) => unreachable!("the position found an element"),
        }
    }

    /// Keep only the child elements for which `keep` is true (text is kept). `keep` sees
    /// each child once. Content shared by the copies of a broadcast stays shared when
    /// nothing goes: routing's hooks strip what is rarely there, on every copy.
    pub fn retain_children(&mut self, mut keep: impl FnMut(&Element) -> bool) {
        let Some(first_dropped) = self.nodes().position(|n| n.as_element().is_some_and(|e| !keep(e))) else {
            return;
        };
        let mut i = 0;
        self.content.nodes_mut().retain(|n| {
            let verdict = match i.cmp(&first_dropped) {
                std::cmp::Ordering::Less => true,
                std::cmp::Ordering::Equal => false,
                std::cmp::Ordering::Greater => n.as_element().is_none_or(&mut keep),
            };
            i += 1;
            verdict
        });
    }

    /// Whether this element's children are shared with other copies (see
    /// [`Element::share_content`]).
    pub fn shares_content(&self) -> bool {
        matches!(self.content, Content::Shared(_))
    }

    /// The text directly inside this element, all runs together.
    pub fn text(&self) -> String {
        self.nodes().filter_map(Node::as_text).collect()
    }

    pub fn append_child(&mut self, child: Element) -> &mut Element {
        let nodes = self.content.nodes_mut();
        nodes.push(Node::Element(child));
        match nodes.last_mut() {
            Some(Node::Element(e)) => e,
            _ => unreachable!("just pushed"),
        }
    }

    /// Append text, joined to the text before it if the last child is text.
    pub fn append_text(&mut self, text: impl AsRef<str>) {
        let text = text.as_ref();
        if text.is_empty() {
            return;
        }
        let nodes = self.content.nodes_mut();
        match nodes.last_mut() {
            Some(Node::Text(t)) => t.push_str(text),
            _ => nodes.push(Node::Text(text.to_string())),
        }
    }

    /// Append an element already serialised: written out as it is. It is not a child element
    /// to [`Element::children`], [`Element::get_child`] and the like, nor text to
    /// [`Element::text`]: for what the server only passes on, never looks into (an archived
    /// message in a query's result).
    pub fn append_serialised(&mut self, serialised: Serialised) {
        self.content.nodes_mut().push(Node::Serialised(serialised));
    }

    pub fn append_node(&mut self, node: Node) {
        match node {
            Node::Element(e) => {
                self.append_child(e);
            }
            Node::Text(t) => self.append_text(t),
            Node::Serialised(s) => self.append_serialised(s),
        }
    }

    /// Remove and return every child node.
    pub fn take_nodes(&mut self) -> Vec<Node> {
        std::mem::take(self.content.nodes_mut())
    }

    /// Write the children once, so that this element and its clones (which share them
    /// until one of them changes its children) are serialised without writing them again:
    /// for what goes unchanged but for its addressing to many recipients.
    pub fn share_content(&mut self) {
        // Children that would share a hoisted declaration (see the writer) are not shared:
        // written apart, each would declare it again, and the bound on what a tree makes the
        // writer write would no longer hold.
        if matches!(self.content, Content::Shared(_)) || !super::writer::hoists_nothing(self) {
            return;
        }
        let nodes = std::mem::take(self.content.nodes_mut());
        let mut out = Vec::new();
        super::writer::write_nodes(&mut out, &nodes, self.ns.as_str());
        let written = String::from_utf8(out).expect("the writer only emits UTF-8").into_boxed_str();
        self.content = Content::Shared(Arc::new(SharedContent { nodes, ns: self.ns.clone(), written }));
    }

    /// The children as already written (see [`Element::share_content`]), if they are
    /// shared and were written for `default_ns`.
    pub(crate) fn written_content(&self, default_ns: &str) -> Option<&str> {
        match &self.content {
            Content::Shared(shared) if shared.ns.as_str() == default_ns => Some(&shared.written),
            _ => None,
        }
    }

    /// Bytes this tree holds on the heap, counted from its real layout (capacities, shared
    /// namespace strings once). For limits and for the tests that check them.
    pub fn heap_bytes(&self) -> usize {
        let mut seen: Vec<&Namespace> = Vec::new();
        self.heap_bytes_inner(&mut seen)
    }

    fn heap_bytes_inner<'a>(&'a self, seen: &mut Vec<&'a Namespace>) -> usize {
        let count_ns = |ns: &'a Namespace, seen: &mut Vec<&'a Namespace>| {
            if ns.heap_bytes() == 0 || seen.iter().any(|s| s.same_allocation(ns)) {
                0
            } else {
                seen.push(ns);
                ns.heap_bytes()
            }
        };
        let mut n = self.name.len() + count_ns(&self.ns, seen);
        n += self.attrs.capacity() * std::mem::size_of::<Attr>();
        for a in &self.attrs {
            n += a.name.len() + a.value.len() + count_ns(&a.ns, seen);
        }
        if let Content::Shared(shared) = &self.content {
            // Held once for every copy, but counted for each: limits stay conservative.
            n += shared.written.len();
        }
        n += self.content.nodes().capacity() * std::mem::size_of::<Node>();
        for node in self.content.nodes() {
            n += match node {
                Node::Element(e) => e.heap_bytes_inner(seen),
                Node::Text(t) => t.capacity(),
                Node::Serialised(s) => s.0.capacity(),
            };
        }
        n
    }
}

/// Attributes compare as a set: their order carries no meaning in XML.
impl PartialEq for Element {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.ns == other.ns
            && self.attrs.len() == other.attrs.len()
            && self.attrs.iter().all(|a| other.attrs.contains(a))
            && self.content.nodes() == other.content.nodes()
    }
}
impl Eq for Element {}

impl fmt::Debug for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{{{}}}{}", self.ns.as_str(), self.name)?;
        for a in &self.attrs {
            write!(f, " {a:?}")?;
        }
        if self.content.nodes().is_empty() {
            return write!(f, "/>");
        }
        write!(f, ">")?;
        for n in self.content.nodes() {
            write!(f, "{n:?}")?;
        }
        write!(f, "</{}>", self.name)
    }
}

/// Builds an element in one expression.
pub struct ElementBuilder {
    el: Element,
}

impl ElementBuilder {
    pub fn attr(mut self, name: &str, value: impl Into<String>) -> Self {
        self.el.set_attr(name, value);
        self
    }

    pub fn append(mut self, child: Element) -> Self {
        self.el.append_child(child);
        self
    }

    pub fn text(mut self, text: &str) -> Self {
        self.el.append_text(text);
        self
    }

    pub fn build(self) -> Element {
        self.el
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_namespaces_are_static_others_shared() {
        assert_eq!(Namespace::new(ns::CLIENT).heap_bytes(), 0);
        let a = Namespace::new("urn:example:long");
        let b = a.clone();
        assert!(a.same_allocation(&b));
        assert_eq!(a, Namespace::new("urn:example:long"));
        assert!(!a.same_allocation(&Namespace::new("urn:example:long")));
    }

    #[test]
    fn retaining_every_child_keeps_shared_content_shared() {
        let mut el = Element::bare("message", ns::CLIENT);
        el.append_child(Element::bare("a", "urn:a"));
        el.append_text("t");
        el.append_child(Element::bare("b", "urn:b"));
        el.append_child(Element::bare("c", "urn:c"));
        el.share_content();
        let mut copy = el.clone();
        let mut seen = 0;
        copy.retain_children(|_| {
            seen += 1;
            true
        });
        assert_eq!(seen, 3);
        assert!(copy.shares_content(), "nothing removed: still shared");
        assert_eq!(copy, el);

        let mut seen = Vec::new();
        copy.retain_children(|c| {
            seen.push(c.name().to_string());
            !c.is("b", "urn:b")
        });
        assert_eq!(seen, ["a", "b", "c"], "each child judged once");
        assert!(!copy.shares_content());
        let names: Vec<_> = copy.children().map(|c| c.name().to_string()).collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(copy.text(), "t");
        assert_eq!(el.children().count(), 3, "the other copies keep theirs");

        let mut addressed = el.clone();
        addressed.set_attr("to", "a@b/c");
        let copy = addressed.copy_to("d@e/f");
        assert!(copy.shares_content());
        assert_eq!(copy.attr("to"), Some("d@e/f"));
        assert_eq!(copy.attrs().filter(|a| &*a.name == "to").count(), 1);
        let mut expected = el.clone();
        expected.set_attr("to", "d@e/f");
        assert_eq!(copy, expected);
    }

    #[test]
    fn attributes_and_children() {
        let mut el = Element::builder("message", ns::CLIENT).attr("to", "a@b").build();
        el.set_attr("to", "c@d");
        el.set_attr_ns(Namespace::XML, "lang", "en");
        assert_eq!(el.attr("to"), Some("c@d"));
        assert_eq!(el.attr_ns(ns::XML, "lang"), Some("en"));
        assert_eq!(el.attr("lang"), None);
        el.append_text("a");
        el.append_text("b");
        el.append_child(Element::bare("body", ns::CLIENT)).append_text("hi");
        assert_eq!(el.text(), "ab");
        assert_eq!(el.get_child("body", ns::CLIENT).unwrap().text(), "hi");
        assert_eq!(el.remove_attr("to").as_deref(), Some("c@d"));
        assert!(el.remove_child("body", ns::CLIENT).is_some());
        assert!(!el.has_child("body", ns::CLIENT));
        // Attribute order does not matter to equality.
        let x = Element::builder("a", "u").attr("p", "1").attr("q", "2").build();
        let y = Element::builder("a", "u").attr("q", "2").attr("p", "1").build();
        assert_eq!(x, y);
    }

    #[test]
    fn shared_namespaces_are_counted_once() {
        let ns = Namespace::new(&"u".repeat(1000));
        let mut root = Element::bare("r", ns.clone());
        for _ in 0..100 {
            root.append_child(Element::bare("c", ns.clone()));
        }
        let bytes = root.heap_bytes();
        assert!(bytes < 1000 + 100 * 200, "{bytes}");
    }
}
