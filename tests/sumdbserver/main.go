// Command sumdbserver is a checksum database for athens-trio's tests: golang.org/x/mod's
// own sumdb.Server over an in-memory transparency log, on loopback.
//
// It reads the records to log from -records (go.sum lines; consecutive lines naming the
// same module and version form one record, logged in file order), signs tree heads with
// the note key in -key (generated there when the file does not exist, so a restarted
// server signs with the same key), and prints one JSON line on stdout:
//
//	{"vkey": "<verifier key>", "addr": "127.0.0.1:PORT", "size": N}
//
// POST /add with go.sum lines in the body logs more records (the tree grows).
//
// Misbehaviour for negative tests:
//
//	-tamper module@version  serve that record with a changed h1: hash (the tree keeps the honest one)
//	-sign-other-key         sign tree heads with a fresh key of the same name
//	-corrupt-signature      sign with the right key, then flip a bit of the signature
//
// A forked history is a restart with another -records file and the same -key.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type logStore struct {
	mu      sync.RWMutex
	records [][]byte
	hashes  []tlog.Hash // stored hashes, in tlog's storage order
	ids     map[module.Version]int64

	signer  note.Signer
	tamper  module.Version
	corrupt bool
}

func (s *logStore) readHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(s.hashes)) {
			return nil, fs.ErrNotExist
		}
		out[i] = s.hashes[x]
	}
	return out, nil
}

// add logs one record; the caller holds s.mu for writing.
func (s *logStore) add(m module.Version, text []byte) error {
	if _, ok := s.ids[m]; ok {
		return fmt.Errorf("%s@%s logged twice", m.Path, m.Version)
	}
	n := int64(len(s.records))
	hs, err := tlog.StoredHashes(n, text, tlog.HashReaderFunc(s.readHashes))
	if err != nil {
		return err
	}
	s.hashes = append(s.hashes, hs...)
	s.records = append(s.records, text)
	s.ids[m] = n
	return nil
}

// addLines logs the records that go.sum text holds.
func (s *logStore) addLines(data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var cur module.Version
	var text []byte
	flush := func() error {
		if text == nil {
			return nil
		}
		err := s.add(cur, text)
		text = nil
		return err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 {
			return fmt.Errorf("not a go.sum line: %q", line)
		}
		m := module.Version{Path: f[0], Version: strings.TrimSuffix(f[1], "/go.mod")}
		if m != cur {
			if err := flush(); err != nil {
				return err
			}
			cur = m
		}
		text = append(text, line+"\n"...)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return flush()
}

func (s *logStore) Signed(ctx context.Context) ([]byte, error) {
	s.mu.RLock()
	n := int64(len(s.records))
	h, err := tlog.TreeHash(n, tlog.HashReaderFunc(s.readHashes))
	s.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	msg, err := note.Sign(&note.Note{Text: string(tlog.FormatTree(tlog.Tree{N: n, Hash: h}))}, s.signer)
	if err != nil {
		return nil, err
	}
	if s.corrupt {
		// Flip one bit of the signature itself (past the 4-byte key hash), keeping the
		// line well-formed base64 so that only the signature check can refuse it.
		i := bytes.LastIndex(msg, []byte(" ")) + 1
		sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(msg[i:])))
		if err != nil {
			return nil, err
		}
		sig[len(sig)-1] ^= 0x01
		msg = append(msg[:i], base64.StdEncoding.EncodeToString(sig)+"\n"...)
	}
	return msg, nil
}

func (s *logStore) ReadRecords(ctx context.Context, id, n int64) ([][]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if id < 0 || n < 0 || id+n > int64(len(s.records)) {
		return nil, fs.ErrNotExist
	}
	out := make([][]byte, n)
	for i := range out {
		text := s.records[id+int64(i)]
		if tid, ok := s.ids[s.tamper]; ok && tid == id+int64(i) {
			text = tampered(text)
		}
		out[i] = text
	}
	return out, nil
}

// tampered returns text with the first hash's last base64 digit changed.
func tampered(text []byte) []byte {
	out := bytes.Clone(text)
	i := bytes.IndexByte(out, '=')
	if i < 1 {
		i = bytes.IndexByte(out, '\n')
	}
	if out[i-1] == 'A' {
		out[i-1] = 'B'
	} else {
		out[i-1] = 'A'
	}
	return out
}

func (s *logStore) Lookup(ctx context.Context, m module.Version) (int64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	id, ok := s.ids[m]
	if !ok {
		return 0, fs.ErrNotExist
	}
	return id, nil
}

func (s *logStore) ReadTileData(ctx context.Context, t tlog.Tile) ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	// Refuse tiles beyond the current tree: the width at level L*H is bounded by size.
	have := int64(len(s.records)) >> uint(t.L*t.H)
	if t.N<<uint(t.H)+int64(t.W) > have {
		return nil, fs.ErrNotExist
	}
	return tlog.ReadTileData(t, tlog.HashReaderFunc(s.readHashes))
}

// loadSigner reads the key file ("<signer key>\n<verifier key>\n"), creating it with a
// fresh key pair when absent. With other, tree heads are signed by a fresh key of the
// same name while the file's verifier key is still the one announced.
func loadSigner(path, name string, other bool) (note.Signer, string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		skey, vkey, gerr := note.GenerateKey(rand.Reader, name)
		if gerr != nil {
			return nil, "", gerr
		}
		data = []byte(skey + "\n" + vkey + "\n")
		if werr := os.WriteFile(path, data, 0o600); werr != nil {
			return nil, "", werr
		}
	} else if err != nil {
		return nil, "", err
	}
	skey, vkey, _ := strings.Cut(strings.TrimSpace(string(data)), "\n")
	signer, err := note.NewSigner(skey)
	if err != nil {
		return nil, "", err
	}
	if other {
		fresh, _, gerr := note.GenerateKey(rand.Reader, signer.Name())
		if gerr != nil {
			return nil, "", gerr
		}
		if signer, err = note.NewSigner(fresh); err != nil {
			return nil, "", err
		}
	}
	return signer, strings.TrimSpace(vkey), nil
}

func main() {
	records := flag.String("records", "", "file of go.sum lines to log")
	keyFile := flag.String("key", "", "signer key file (created if absent)")
	name := flag.String("name", "sumdb.test", "database name for a new key")
	listen := flag.String("listen", "127.0.0.1:0", "listen address")
	tamper := flag.String("tamper", "", "module@version to serve with a changed hash")
	otherKey := flag.Bool("sign-other-key", false, "sign with a fresh key of the same name")
	corrupt := flag.Bool("corrupt-signature", false, "flip a bit of each signature")
	flag.Parse()
	if *keyFile == "" {
		log.Fatal("-key is required")
	}
	signer, vkey, err := loadSigner(*keyFile, *name, *otherKey)
	if err != nil {
		log.Fatal(err)
	}
	s := &logStore{ids: map[module.Version]int64{}, signer: signer, corrupt: *corrupt}
	if *tamper != "" {
		p, v, _ := strings.Cut(*tamper, "@")
		s.tamper = module.Version{Path: p, Version: v}
	}
	if *records != "" {
		data, err := os.ReadFile(*records)
		if err != nil {
			log.Fatal(err)
		}
		if err := s.addLines(data); err != nil {
			log.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	db := sumdb.NewServer(s)
	for _, p := range sumdb.ServerPaths {
		mux.Handle(p, db)
	}
	mux.HandleFunc("/add", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err == nil {
			err = s.addLines(body)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.RLock()
		n := len(s.records)
		s.mu.RUnlock()
		fmt.Fprintf(w, "%d\n", n)
	})
	s.mu.RLock()
	size := len(s.records)
	s.mu.RUnlock()
	hello, _ := json.Marshal(map[string]any{"vkey": vkey, "addr": ln.Addr().String(), "size": size})
	fmt.Println(string(hello))
	log.Fatal(http.Serve(ln, mux))
}
