package broker

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/mriot/mriot/internal/emulator/pki"
)

// clientTLS is a device's TLS configuration: its certificate (and, with
// chain, the issuing CAs) and the root that signed the server.
func clientTLS(root *x509.Certificate, leaf *pki.Leaf, chain bool) *tls.Config {
	der := [][]byte{leaf.Cert.Raw}
	if chain {
		for _, c := range leaf.Chain {
			der = append(der, c.Raw)
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	return &tls.Config{
		RootCAs:      pool,
		ServerName:   "iot.example.com",
		Certificates: []tls.Certificate{{Certificate: der, PrivateKey: leaf.Key, Leaf: leaf.Cert}},
		MinVersion:   tls.VersionTLS12,
	}
}

// pahoClient is a connected paho (MQTT 3.1.1) client and a channel that
// receives the reason its connection was lost.
type pahoClient struct {
	paho.Client
	lost chan error
}

func connectPaho(addr string, tlsCfg *tls.Config, clientID string) (*pahoClient, error) {
	lost := make(chan error, 1)
	opts := paho.NewClientOptions().
		AddBroker("ssl://" + addr).
		SetClientID(clientID).
		SetTLSConfig(tlsCfg).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(5 * time.Second).
		SetWriteTimeout(5 * time.Second).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			select {
			case lost <- err:
			default:
			}
		})
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect %s: timed out", clientID)
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("connect %s: %w", clientID, err)
	}
	return &pahoClient{Client: c, lost: lost}, nil
}

// v5Client is a minimal MQTT client made of mochi's packet codec, MQTT 5
// unless dialled with dialMQTT: enough to connect, publish, subscribe and
// read what the server sends, packet by packet.
type v5Client struct {
	conn    net.Conn
	r       *bufio.Reader
	version byte // 4 (MQTT 3.1.1) or 5
}

func dialV5(addr string, tlsCfg *tls.Config, clientID string) (*v5Client, packets.Packet, error) {
	return dialMQTT(addr, tlsCfg, clientID, 5)
}

// dialMQTT connects with protocol version 4 (MQTT 3.1.1) or 5 and returns
// the CONNACK.
func dialMQTT(addr string, tlsCfg *tls.Config, clientID string, version byte) (*v5Client, packets.Packet, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, tlsCfg)
	if err != nil {
		return nil, packets.Packet{}, err
	}
	c := &v5Client{conn: conn, r: bufio.NewReader(conn), version: version}
	err = c.write(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), ClientIdentifier: clientID, Clean: true, Keepalive: 30,
		},
	})
	if err != nil {
		_ = conn.Close()
		return nil, packets.Packet{}, err
	}
	pk, err := c.read(5 * time.Second)
	if err != nil {
		_ = conn.Close()
		return nil, packets.Packet{}, err
	}
	if pk.FixedHeader.Type != packets.Connack {
		_ = conn.Close()
		return nil, pk, fmt.Errorf("got packet type %d, want CONNACK", pk.FixedHeader.Type)
	}
	return c, pk, nil
}

func (c *v5Client) Close() { _ = c.conn.Close() }

func (c *v5Client) write(pk packets.Packet) error {
	pk.ProtocolVersion = c.version
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	default:
		return fmt.Errorf("cannot encode packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		return err
	}
	_ = c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err = c.conn.Write(buf.Bytes())
	return err
}

// read returns the next packet; io.EOF (or a reset) when the server closed.
func (c *v5Client) read(timeout time.Duration) (packets.Packet, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	b, err := c.r.ReadByte()
	if err != nil {
		return packets.Packet{}, err
	}
	var fh packets.FixedHeader
	if err := fh.Decode(b); err != nil {
		return packets.Packet{}, err
	}
	n, _, err := packets.DecodeLength(c.r)
	if err != nil {
		return packets.Packet{}, err
	}
	fh.Remaining = n
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return packets.Packet{}, err
	}
	pk := packets.Packet{FixedHeader: fh, ProtocolVersion: c.version}
	switch fh.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	default:
		err = fmt.Errorf("unexpected packet type %d", fh.Type)
	}
	return pk, err
}
