// Package sqlfile reads the SQL statements a package embeds from its sql/
// folder.
package sqlfile

import "embed"

// Reader returns a function giving the statement in sql/<name>.sql of
// files. It panics when the file is missing: that is a build mistake.
func Reader(files embed.FS) func(name string) string {
	return func(name string) string {
		b, err := files.ReadFile("sql/" + name + ".sql")
		if err != nil {
			panic(err)
		}
		return string(b)
	}
}
