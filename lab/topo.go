package lab

// Addresses of the standard topology:
//
//	client 10.200.1.2/24 (c0) -- (r0) 10.200.1.1/24 router 10.200.2.1/24 (r1) -- (s0) 10.200.2.2/24 server
const (
	ClientAddr    = "10.200.1.2"
	RouterInAddr  = "10.200.1.1"
	RouterOutAddr = "10.200.2.1"
	ServerAddr    = "10.200.2.2"
)

// ClientRouterServer builds client -- router -- server with forwarding on
// the router and default routes through it.
func ClientRouterServer() (*Lab, error) {
	l := New()
	ok := false
	defer func() {
		if !ok {
			l.Close()
		}
	}()
	for _, h := range []string{"client", "router", "server"} {
		if err := l.AddHost(h); err != nil {
			return nil, err
		}
	}
	if err := l.Link("client", "c0", ClientAddr+"/24", "router", "r0", RouterInAddr+"/24"); err != nil {
		return nil, err
	}
	if err := l.Link("server", "s0", ServerAddr+"/24", "router", "r1", RouterOutAddr+"/24"); err != nil {
		return nil, err
	}
	if err := l.IP("client", "route", "add", "default", "via", RouterInAddr); err != nil {
		return nil, err
	}
	if err := l.IP("server", "route", "add", "default", "via", RouterOutAddr); err != nil {
		return nil, err
	}
	if err := l.Sysctl("router", "net.ipv4.ip_forward", "1"); err != nil {
		return nil, err
	}
	ok = true
	return l, nil
}
