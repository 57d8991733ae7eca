package memiot

import "slices"

// Operations are the AWS IoT API operation names the registry answers, as
// its hook, latency, faults and quotas see them (WithHook): what
// `mriot local --fault OP=RATE` and --quotas may name.
var Operations = []string{
	"AttachPolicy", "AttachThingPrincipal", "CreatePolicy", "CreateThing",
	"DeleteCertificate", "DeleteThing", "DescribeCACertificate", "DescribeCertificate",
	"DescribeThing", "DetachPolicy", "DetachThingPrincipal", "GetPolicy",
	"ListAttachedPolicies", "ListCACertificates", "ListCertificatesByCA", "ListThingPrincipals",
	"ListThings", "RegisterCACertificate", "RegisterCertificate", "UpdateCACertificate",
	"UpdateCertificate", "UpdateThing",
}

// IsOperation reports whether op is one of Operations.
func IsOperation(op string) bool { return slices.Contains(Operations, op) }
