//! The canvas: an SVG of the graph with pan, zoom, dragging, and drag gestures that create units and
//! links, and the read-only mirrors of remote outputs linked here.

mod mirror;
mod node;
mod view;

pub use view::GraphView;
