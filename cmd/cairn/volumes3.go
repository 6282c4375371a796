package main

import (
	"context"
	"errors"
	"path"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cairnbackup/cairn/media/s3vol"
	"github.com/cairnbackup/cairn/wire"
)

// s3Source is where 'cairn volume ls/extract' reads a volume of an S3
// pool, given as s3://BUCKET/PREFIX/NAME, with no server: the store's
// endpoint and region from flags, the credentials from a file of mode
// 0600 or the environment (never a flag). The volume is read in place
// with range reads, as a restore reads it, so nothing is downloaded
// first.
type s3Source struct {
	endpoint, region, credentialsFile string
}

func (s *s3Source) flags(c *cobra.Command) {
	c.Flags().StringVar(&s.endpoint, "s3-endpoint", "", "for an s3:// volume: the store's URL (https://... or http://...)")
	c.Flags().StringVar(&s.region, "s3-region", "", "for an s3:// volume: the bucket's region")
	c.Flags().StringVar(&s.credentialsFile, "s3-credentials-file", "", "for an s3:// volume: a JSON file (mode 0600) with access_key and secret_key; without it $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY")
}

// open opens the volume at an s3:// address for range reads.
func (s s3Source) open(ctx context.Context, addr string) (*s3vol.Reader, error) {
	const how = "give the volume as s3://BUCKET/PREFIX/NAME (the pool's prefix, then the volume's name) with --s3-endpoint"
	rest := strings.TrimPrefix(addr, "s3://")
	bucket, key, ok := strings.Cut(rest, "/")
	key = strings.TrimSuffix(key, "/")
	if !ok || bucket == "" || key == "" {
		return nil, wire.Errorf(wire.CodeInvalidArgument, how, "%q names no volume in a bucket", addr)
	}
	if s.endpoint == "" {
		return nil, wire.Errorf(wire.CodeInvalidArgument, how, "reading %s needs the store's URL: pass --s3-endpoint", addr)
	}
	cr, err := s3vol.ResolveCredentials(s.credentialsFile)
	if err != nil {
		return nil, wire.Errorf(wire.CodeInvalidArgument, "", "%w", err)
	}
	prefix, name := path.Split(key)
	p, err := s3vol.New(s3vol.Config{Pool: bucket, Endpoint: s.endpoint, Bucket: bucket, Region: s.region, Prefix: prefix,
		AccessKey: cr.AccessKey, SecretKey: cr.SecretKey})
	if err != nil {
		return nil, wire.Errorf(wire.CodeInvalidArgument, how, "%w", err)
	}
	r, err := p.OpenRead(ctx, name)
	if err != nil {
		var se *s3vol.StoreError
		switch {
		case errors.Is(err, s3vol.ErrNoVolume):
			return nil, wire.Errorf(wire.CodeNotFound, "'cairn volume list' shows each volume's place", "%w", err)
		case errors.As(err, &se) && se.Unreachable():
			return nil, wire.Errorf(wire.CodeUnavailable, "", "%w", err)
		}
		return nil, wire.Errorf(wire.CodeIO, "", "%w", err)
	}
	return r, nil
}
