package socklb

import (
	"net/netip"
	"testing"
)

// BenchmarkUpsertService measures UpsertService with 10,000 services of two
// backends already programmed.
func BenchmarkUpsertService(b *testing.B) {
	e := newEnv(b, Options{})
	const services = 10000
	frontend := func(i int) Frontend {
		return Frontend{Addr: netip.AddrFrom4([4]byte{10, 100 + byte(i>>16), byte(i >> 8), byte(i)}), Port: 80, Proto: TCP}
	}
	for id := BackendID(1); id <= 3; id++ {
		e.backend(id, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 200, 0, byte(id)}), 8080), TCP)
	}
	for i := range services {
		must(b, e.dp.UpsertService(frontend(i), ServiceInfo{RevNATID: uint16(i + 1)}, []BackendID{1, 2}))
	}

	b.Run("new", func(b *testing.B) {
		// A fresh frontend each time; every 20,000 they are deleted (untimed)
		// to stay within the map sizes and rev-NAT IDs.
		const batch = 20000
		i := 0
		for b.Loop() {
			if i == batch {
				b.StopTimer()
				for j := range batch {
					must(b, e.dp.DeleteService(frontend(services+j)))
				}
				i = 0
				b.StartTimer()
			}
			must(b, e.dp.UpsertService(frontend(services+i), ServiceInfo{RevNATID: uint16(services + 1 + i)}, []BackendID{1, 2}))
			i++
		}
	})
	b.Run("unchanged", func(b *testing.B) {
		for b.Loop() {
			must(b, e.dp.UpsertService(frontend(0), ServiceInfo{RevNATID: 1}, []BackendID{1, 2}))
		}
	})
	b.Run("swap-backend", func(b *testing.B) {
		sets := [][]BackendID{{1, 3}, {1, 2}}
		i := 0
		for b.Loop() {
			must(b, e.dp.UpsertService(frontend(0), ServiceInfo{RevNATID: 1}, sets[i%2]))
			i++
		}
	})
}
