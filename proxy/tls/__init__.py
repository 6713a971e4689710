"""TLS: server contexts chosen by SNI, upstream origination, credential files and their rotation, and
the ClientHello SNI parser used to route TLS without terminating it."""
