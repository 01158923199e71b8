package selector

import (
	"encoding/binary"
	"fmt"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// createOwnedTable sends NFT_MSG_NEWTABLE with NFT_TABLE_F_OWNER and
// NLM_F_EXCL in its own batch on conn (google/nftables does not send table
// flags). The table then belongs to conn's socket: only it may change the
// table, and the kernel deletes the table when the socket closes, which
// covers a SIGKILL.
func createOwnedTable(conn *netlink.Conn, family byte, name string) error {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.String(unix.NFTA_TABLE_NAME, name)
	ae.Uint32(unix.NFTA_TABLE_FLAGS, tableFlagOwner)
	attrs, err := ae.Encode()
	if err != nil {
		return err
	}
	batch := func(t uint16) netlink.Message {
		return netlink.Message{
			Header: netlink.Header{Type: netlink.HeaderType(t), Flags: netlink.Request},
			Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, unix.NFNL_SUBSYS_NFTABLES},
		}
	}
	msgs := []netlink.Message{
		batch(unix.NFNL_MSG_BATCH_BEGIN),
		{
			Header: netlink.Header{
				Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWTABLE),
				Flags: netlink.Request | netlink.Acknowledge | netlink.Create | netlink.Excl,
			},
			Data: append([]byte{family, unix.NFNETLINK_V0, 0, 0}, attrs...),
		},
		batch(unix.NFNL_MSG_BATCH_END),
	}
	sent, err := conn.SendMessages(msgs)
	if err != nil {
		return fmt.Errorf("send NEWTABLE: %w", err)
	}
	seq := sent[1].Header.Sequence
	for {
		replies, err := conn.Receive()
		if err != nil {
			return err // *netlink.OpError carrying the errno (EEXIST, EPERM, ...)
		}
		for _, r := range replies {
			if r.Header.Sequence == seq && r.Header.Type == netlink.Error {
				return nil // an ack (errors are returned by Receive)
			}
		}
	}
}
