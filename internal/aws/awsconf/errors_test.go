package awsconf

import (
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	iottypes "github.com/aws/aws-sdk-go-v2/service/iot/types"
	"github.com/aws/smithy-go"

	"github.com/mriot/mriot/internal/core/fleet"
)

func TestExceptionsTable(t *testing.T) {
	x := NewExceptions([]Exception{
		On[*iottypes.ResourceNotFoundException](fleet.ErrNotFound),
		On[*iottypes.ThrottlingException](fleet.ErrThrottled),
	}, map[string]error{"AccessDeniedException": fleet.ErrInvalid})
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"nil", nil, nil},
		{"typed", fmt.Errorf("op: %w", &iottypes.ResourceNotFoundException{Message: aws.String("gone")}), fleet.ErrNotFound},
		{"untyped, code from the type", &smithy.GenericAPIError{Code: "ThrottlingException"}, fleet.ErrThrottled},
		{"extra code", &smithy.GenericAPIError{Code: "AccessDeniedException"}, fleet.ErrInvalid},
		{"unknown code", &smithy.GenericAPIError{Code: "SomethingElse", Fault: smithy.FaultClient}, nil},
	}
	for _, tc := range tests {
		if got := x.Sentinel(tc.err); got != tc.want {
			t.Errorf("%s: Sentinel = %v, want %v", tc.name, got, tc.want)
		}
	}
}
