package fleet

// IoTQuotas are AWS IoT Core's default control-plane rates, in transactions
// per second per account and region, for the registry operations mriot calls
// (AWS IoT Core endpoints and quotas, "AWS IoT Core API throttling limits":
// https://docs.aws.amazon.com/general/latest/gr/iot-core.html).
// The three listings' 10 TPS come from the developer guide's "AWS IoT
// Throttling Limits" table (awsdocs/aws-iot-docs, developerguide/limits-iot.md,
// before that page moved to the General Reference); ListThings' 10 is also
// the Service Quotas default of "ListThings API TPS" (L-57AAC135). The
// current General Reference values of ListCACertificates (L-15185D92) and
// ListCertificatesByCA (L-5A0AFD83) could not be confirmed here.
//
// The reconciler Lambda spends a share of them (functions/reconcile), and
// the in-memory registry enforces them (memiot.AWSDefaultQuotas is this map).
// The map is shared: copy it before changing it.
var IoTQuotas = map[string]float64{
	"CreateThing":           100,
	"DescribeThing":         350,
	"DeleteThing":           100,
	"UpdateThing":           100,
	"AttachThingPrincipal":  100,
	"DetachThingPrincipal":  100,
	"ListThingPrincipals":   20,
	"AttachPolicy":          15,
	"DetachPolicy":          15,
	"ListAttachedPolicies":  15,
	"UpdateCertificate":     10,
	"RegisterCertificate":   10,
	"DescribeCertificate":   10,
	"DescribeCACertificate": 10,
	"DeleteCertificate":     10,
	"ListThings":            10,
	"ListCACertificates":    10,
	"ListCertificatesByCA":  10,
}
