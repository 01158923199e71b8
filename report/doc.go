// Package report renders packet timelines: JSON Lines (the v1 contract in
// README.md) and text for terminals. Renderers read event values only.
package report
