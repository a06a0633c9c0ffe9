//go:build tools

// Package tools names the program this wrapper module builds.
package tools

import _ "go.etcd.io/etcd/server/v3"
