# Runs internal/testkit/motoserver's launcher (python -c CODE ARGS...) after aligning
# moto with AWS where the deploy tests depend on it:
#
#   DescribeCertificate returns caCertificateId for a certificate registered
#   with its CA (AWS's CertificateDescription.caCertificateId); moto leaves
#   it out, and jitr rightly refuses a certificate whose CA it cannot see.
import sys

if len(sys.argv) < 3 or sys.argv[1] != "-c":
    sys.stderr.write("moto_aws.py: want -c CODE ARGS...\n")
    sys.exit(2)
code = sys.argv[2]
sys.argv = ["-c"] + sys.argv[3:]

try:
    from moto.iot import models as _iot

    _describe = _iot.FakeCertificate.to_description_dict

    def _to_description_dict(self):
        d = _describe(self)
        if getattr(self, "ca_certificate_id", None):
            d.setdefault("caCertificateId", self.ca_certificate_id)
        return d

    _iot.FakeCertificate.to_description_dict = _to_description_dict
except ImportError:
    pass  # the launcher reports a missing moto itself

exec(compile(code, "<motoserver launcher>", "exec"), {"__name__": "__main__"})
