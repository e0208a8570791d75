package analyzer

import (
	"bufio"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// spoolRun is how many candidates a pass's spool holds in memory (a
// variable for tests); beyond, it writes them, sorted, as a run to a
// temporary file and merges the runs when the CSV is written.
var spoolRun = 256

// csvRow is what the CSV says of one candidate.
type csvRow struct {
	id               tenant.ID
	documents, users int64
	last             time.Time // zero: never active
	shards           string    // ";"-separated
}

func rowOf(t Tenant) csvRow {
	return csvRow{id: t.ID, documents: t.Activity.Documents, users: t.Activity.Users, last: t.Activity.Last(),
		shards: strings.Join(t.Shards, ";")}
}

func rowOrder(a, b csvRow) int { return byDocuments(a.id, a.documents, b.id, b.documents) }

// candidateSpool keeps a pass's candidates for the CSV, whatever their
// number, in bounded memory: up to spoolRun in memory, and runs of spoolRun
// sorted in an unlinked temporary file in the report's directory (gone with
// the process, whatever happens to it).
type candidateSpool struct {
	dir  string
	rows []csvRow
	file *os.File
	w    *bufio.Writer
	ends []int64 // where each run ends in the file
	size int64
	buf  []byte
}

func newCandidateSpool(dir string) *candidateSpool { return &candidateSpool{dir: dir} }

func (s *candidateSpool) add(t Tenant) error {
	s.rows = append(s.rows, rowOf(t))
	if len(s.rows) < spoolRun {
		return nil
	}
	return s.spill()
}

// spill writes the rows in memory, sorted, as a run.
func (s *candidateSpool) spill() error {
	if s.file == nil {
		dir := s.dir
		if dir == "" {
			dir = "."
		}
		f, err := os.CreateTemp(dir, ".candidates-*.tmp")
		if err != nil {
			return fmt.Errorf("spool the candidates: %w", err)
		}
		if err := os.Remove(f.Name()); err != nil {
			f.Close()
			return fmt.Errorf("spool the candidates: %w", err)
		}
		s.file, s.w = f, bufio.NewWriter(f)
	}
	slices.SortFunc(s.rows, rowOrder)
	for _, row := range s.rows {
		s.buf = encodeRow(s.buf[:0], row)
		n, err := s.w.Write(s.buf)
		s.size += int64(n)
		if err != nil {
			return fmt.Errorf("spool the candidates: %w", err)
		}
	}
	s.ends = append(s.ends, s.size)
	s.rows = s.rows[:0]
	return nil
}

// each calls yield with every row, most documents first, until it returns
// false.
func (s *candidateSpool) each(yield func(csvRow) bool) error {
	slices.SortFunc(s.rows, rowOrder)
	if s.file == nil {
		for _, row := range s.rows {
			if !yield(row) {
				return nil
			}
		}
		return nil
	}
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("spool the candidates: %w", err)
	}
	m := &runMerge{}
	start := int64(0)
	for _, end := range s.ends {
		src := &runReader{r: bufio.NewReaderSize(io.NewSectionReader(s.file, start, end-start), 512)}
		start = end
		if err := m.push(src); err != nil {
			return err
		}
	}
	if len(s.rows) > 0 {
		if err := m.push(&runReader{mem: s.rows}); err != nil {
			return err
		}
	}
	for m.Len() > 0 {
		src := m.srcs[0]
		if !yield(src.row) {
			return nil
		}
		ok, err := src.next()
		if err != nil {
			return err
		}
		if ok {
			heap.Fix(m, 0)
		} else {
			heap.Pop(m)
		}
	}
	return nil
}

func (s *candidateSpool) close() {
	if s.file != nil {
		s.file.Close()
		s.file = nil
	}
}

// encodeRow appends row to b: id, documents, users, last activity (µs since
// 1970, or none), shards.
func encodeRow(b []byte, row csvRow) []byte {
	b = binary.AppendUvarint(b, uint64(len(row.id)))
	b = append(b, row.id...)
	b = binary.AppendVarint(b, row.documents)
	b = binary.AppendVarint(b, row.users)
	if row.last.IsZero() {
		b = append(b, 0)
	} else {
		b = append(b, 1)
		b = binary.AppendVarint(b, row.last.UnixMicro())
	}
	b = binary.AppendUvarint(b, uint64(len(row.shards)))
	return append(b, row.shards...)
}

// runReader is one sorted run: in the file, or the rows still in memory.
type runReader struct {
	r   *bufio.Reader
	mem []csvRow
	row csvRow // the current row
}

// next reads the run's next row; false at its end.
func (rr *runReader) next() (bool, error) {
	if rr.r == nil {
		if len(rr.mem) == 0 {
			return false, nil
		}
		rr.row, rr.mem = rr.mem[0], rr.mem[1:]
		return true, nil
	}
	n, err := binary.ReadUvarint(rr.r)
	if errors.Is(err, io.EOF) {
		return false, nil
	}
	var row csvRow
	text := func(n uint64) string {
		b := make([]byte, n)
		if err == nil {
			_, err = io.ReadFull(rr.r, b)
		}
		return string(b)
	}
	varint := func() int64 {
		var v int64
		if err == nil {
			v, err = binary.ReadVarint(rr.r)
		}
		return v
	}
	row.id = tenant.ID(text(n))
	row.documents, row.users = varint(), varint()
	var active byte
	if err == nil {
		active, err = rr.r.ReadByte()
	}
	if active == 1 {
		row.last = time.UnixMicro(varint())
	}
	var m uint64
	if err == nil {
		m, err = binary.ReadUvarint(rr.r)
	}
	row.shards = text(m)
	if err != nil {
		return false, fmt.Errorf("read the spooled candidates: %w", err)
	}
	rr.row = row
	return true, nil
}

// runMerge is a heap of runs by their current row.
type runMerge struct{ srcs []*runReader }

func (m *runMerge) push(rr *runReader) error {
	ok, err := rr.next()
	if err != nil || !ok {
		return err
	}
	heap.Push(m, rr)
	return nil
}

func (m *runMerge) Len() int           { return len(m.srcs) }
func (m *runMerge) Less(i, j int) bool { return rowOrder(m.srcs[i].row, m.srcs[j].row) < 0 }
func (m *runMerge) Swap(i, j int)      { m.srcs[i], m.srcs[j] = m.srcs[j], m.srcs[i] }
func (m *runMerge) Push(x any)         { m.srcs = append(m.srcs, x.(*runReader)) }
func (m *runMerge) Pop() any {
	last := m.srcs[len(m.srcs)-1]
	m.srcs = m.srcs[:len(m.srcs)-1]
	return last
}
