// Command etcd is the etcd server of the pinned go.etcd.io/etcd/server/v3 release, the same
// entry point as etcd's own main package (deploy/kubernetes/build.sh builds it).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
