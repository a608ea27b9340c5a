//! The canvas: an SVG of the graph with pan, zoom, dragging, and drag gestures that create units and
//! links.

mod node;
mod view;

pub use view::GraphView;
