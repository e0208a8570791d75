package dataplane

// A tenant of a sharded fleet may have a schema, and a record, on several
// shards; these merge what each shard says into what the tenant is.

// MergeActivity is the later activity of a and b, their documents summed
// and the larger user count (a copy's users are the same people).
func MergeActivity(a, b Activity) Activity {
	if b.LastQuery.After(a.LastQuery) {
		a.LastQuery = b.LastQuery
	}
	if b.LastCraft.After(a.LastCraft) {
		a.LastCraft = b.LastCraft
	}
	a.Documents += b.Documents
	a.Users = max(a.Users, b.Users)
	return a
}

// MergeRecords is the tenant's record over every shard: the first marking
// and the latest, the first drop and the last one finished, what was
// removed summed over every copy and attempt, and any operator's
// confirmation. With one record it is that record.
func MergeRecords(recs []Record) Record {
	var m Record
	for _, r := range recs {
		if !r.Found {
			continue
		}
		if !m.Found {
			m = r
			continue
		}
		if r.Marked() && (!m.Marked() || r.MarkedAt.Before(m.MarkedAt)) {
			m.MarkedAt, m.RequestedBy, m.DocumentsAtMarking, m.UsersAtMarking = r.MarkedAt, r.RequestedBy, r.DocumentsAtMarking, r.UsersAtMarking
		}
		if r.LastMarkedAt.After(m.LastMarkedAt) {
			m.LastMarkedAt = r.LastMarkedAt
		}
		if r.DropStarted() && (!m.DropStarted() || r.DropStartedAt.Before(m.DropStartedAt)) {
			m.DropStartedAt = r.DropStartedAt
		}
		if r.DropFinishedAt.After(m.DropFinishedAt) {
			m.DropFinishedAt = r.DropFinishedAt
		}
		if r.LastActivityAt.After(m.LastActivityAt) {
			m.LastActivityAt = r.LastActivityAt
		}
		if r.PublicRowsDeletedAt.After(m.PublicRowsDeletedAt) {
			m.PublicRowsDeletedAt = r.PublicRowsDeletedAt
		}
		if r.CompletionRequestedAt.After(m.CompletionRequestedAt) {
			m.CompletionRequestedAt, m.CompletionRequestedBy = r.CompletionRequestedAt, r.CompletionRequestedBy
		}
		if r.ForgottenAt.After(m.ForgottenAt) {
			m.ForgottenAt = r.ForgottenAt
		}
		if m.DropToken == "" {
			m.DropToken = r.DropToken
		}
		m.RelationsDropped += r.RelationsDropped
		m.PublicRowsDeleted += r.PublicRowsDeleted
		m.LargeObjectsFound += r.LargeObjectsFound
		m.LargeObjectsUnlinked += r.LargeObjectsUnlinked
		m.Removed.S3Objects += r.Removed.S3Objects
		m.Removed.S3Bytes += r.Removed.S3Bytes
		m.Removed.RedisKeys += r.Removed.RedisKeys
		m.Removed.RedisMemberships += r.Removed.RedisMemberships
	}
	return m
}
