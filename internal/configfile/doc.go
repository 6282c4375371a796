// Package configfile is the configuration file of Cairn's roles: the text
// format, how a file fills a role's Config, and how a Config is written out
// as a commented example and as reference documentation.
//
// The format is JSON with two things JSON lacks for a file people edit: a
// line whose first non-blank characters are // is a comment, and a comma
// may end the last item of an object or a list (so that uncommenting any
// line of an example leaves the file valid). Both are blanked to spaces of
// the same length before decoding, so a position in an error is the
// position in the file as written. JSON was kept over YAML, the other
// candidate: every role read JSON already, the standard library decodes
// it, and YAML's implicit types (no, 010, 1:30) surprise people who edit
// a file by hand; comments, what people missed, are the lines above.
//
// The fields of a file are those of a role's Config struct, read by
// reflection from its tags, so that the struct is the one list of what a
// role can be told:
//
//	json:"name"            the field's name in the file: the name of the
//	                       role's flag with '_' for '-' (--data-addr is
//	                       data_addr)
//	config:"alias=id"      older names (separated by '|'), still read with a
//	                       warning so that files already deployed load
//	config:"size"          an int64 of bytes, written with a unit ("50G");
//	                       a bare number still reads as bytes, with a
//	                       warning
//	config:"flag=pool"     the flag is not the field's name (a list field
//	                       and its repeated flag: pools and --pool)
//	config:"fileonly"      no flag sets the field (a list of libraries)
//	config:"default=the host name"
//	                       what the field is when left out, when that is
//	                       not a constant a Config's defaults can show
//	config:"inline=nats_"  a struct whose fields are the file's top-level
//	                       fields with the prefix (nats_ca from CA, as the
//	                       flag --nats-ca); its json name is the older
//	                       object form ("nats_auth": {...}), still read
//
// A time.Duration is written as a Go duration string ("30s", "5m",
// "1h30m"); a bare number still reads as nanoseconds, with a warning.
//
// An Example is a role's file written out from the same structs: every
// field under its doc comment (Docs, read from the Go source by ReadDocs
// into a generated file, since a program has no comments of its own),
// the ones a role sets uncommented, the others commented out with their
// default or a suggestion.
//
// What is wrong with a file comes back as FieldErrors naming the field by
// its path in the file (tape_pools[0].spool_chunk_bytes) and its line, with
// the closest known name for a field that does not exist. A role's Validate
// names the bad field the same way (FieldError, In).
package configfile
