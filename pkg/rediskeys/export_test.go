package rediskeys

import "context"

// SetAfterBatch makes s call f after each UNLINK, with the batch's number
// in its pass (from 1), so that a test can break the store mid-way.
func SetAfterBatch(s *Store, f func(batch int)) { s.afterBatch = f }

// RemovePrefix runs one removal pass over the keys that start with prefix,
// which, unlike a tenant's, may hold glob metacharacters.
func RemovePrefix(ctx context.Context, s *Store, prefix string) (int64, error) {
	var r Removed
	_, err := s.removeKeys(ctx, prefix, &r)
	return r.Keys, err
}

// EscapeGlob is escapeGlob.
var EscapeGlob = escapeGlob
