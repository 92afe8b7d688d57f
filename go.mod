module github.com/realip/realip

go 1.26.0

require github.com/pires/go-proxyproto v0.15.0

require golang.org/x/sys v0.50.0 // indirect
