package filestore

// SetAfterBatch makes s call f after each delete request, with the
// request's number (from 1), so that a test can break the store mid-way.
func SetAfterBatch(s *Store, f func(batch int)) { s.afterBatch = f }
