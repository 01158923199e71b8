// Package capture captures packets like tcpdump. This file set holds the
// pure-Go compiler from the filter AST to classic BPF for AF_PACKET socket
// filters: libpcap needs cgo, and the pure-Go alternatives compile some
// primitives to accept-all. The programs accept and reject exactly what
// tcpdump's (libpcap's) would for the same expression; a differential test
// checks that against "tcpdump -ddd" on a packet corpus.
package capture
