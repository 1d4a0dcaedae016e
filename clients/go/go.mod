module github.com/ledgerd/ledgerd/clients/go

go 1.19
