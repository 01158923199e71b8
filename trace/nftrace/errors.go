package nftrace

import "errors"

var (
	// ErrNotTrace is returned for a netlink message that is not a trace event.
	ErrNotTrace = errors.New("not an nf_tables trace message")
	// ErrTruncated is returned for a message shorter than its header.
	ErrTruncated = errors.New("truncated nf_tables trace message")
)
