package ddbitem

import (
	"bytes"
	"fmt"
	"slices"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/core/fleet"
)

// ToStreamValue converts an SDK attribute value into the form a DynamoDB
// stream record carries to Lambda (aws-lambda-go/events). Every DynamoDB type
// is supported: S, N, B, BOOL, NULL, L, M, SS, NS, BS. An unknown member type
// wraps fleet.ErrInvalid.
func ToStreamValue(av types.AttributeValue) (events.DynamoDBAttributeValue, error) {
	switch v := av.(type) {
	case *types.AttributeValueMemberS:
		return events.NewStringAttribute(v.Value), nil
	case *types.AttributeValueMemberN:
		return events.NewNumberAttribute(v.Value), nil
	case *types.AttributeValueMemberB:
		return events.NewBinaryAttribute(bytes.Clone(v.Value)), nil
	case *types.AttributeValueMemberBOOL:
		return events.NewBooleanAttribute(v.Value), nil
	case *types.AttributeValueMemberNULL:
		return events.NewNullAttribute(), nil
	case *types.AttributeValueMemberSS:
		return events.NewStringSetAttribute(slices.Clone(v.Value)), nil
	case *types.AttributeValueMemberNS:
		return events.NewNumberSetAttribute(slices.Clone(v.Value)), nil
	case *types.AttributeValueMemberBS:
		bs := make([][]byte, len(v.Value))
		for i, b := range v.Value {
			bs[i] = bytes.Clone(b)
		}
		return events.NewBinarySetAttribute(bs), nil
	case *types.AttributeValueMemberL:
		l := make([]events.DynamoDBAttributeValue, len(v.Value))
		for i, e := range v.Value {
			c, err := ToStreamValue(e)
			if err != nil {
				return events.DynamoDBAttributeValue{}, fmt.Errorf("list element %d: %w", i, err)
			}
			l[i] = c
		}
		return events.NewListAttribute(l), nil
	case *types.AttributeValueMemberM:
		m, err := ToStreamImage(v.Value)
		if err != nil {
			return events.DynamoDBAttributeValue{}, err
		}
		return events.NewMapAttribute(m), nil
	default:
		return events.DynamoDBAttributeValue{}, fmt.Errorf("attribute value of type %T: %w", av, fleet.ErrInvalid)
	}
}

// ToStreamImage converts an item into a stream record image (Keys, NewImage,
// OldImage). A nil item gives a nil image.
func ToStreamImage(item map[string]types.AttributeValue) (map[string]events.DynamoDBAttributeValue, error) {
	if item == nil {
		return nil, nil
	}
	out := make(map[string]events.DynamoDBAttributeValue, len(item))
	for k, v := range item {
		c, err := ToStreamValue(v)
		if err != nil {
			return nil, fmt.Errorf("attribute %s: %w", k, err)
		}
		out[k] = c
	}
	return out, nil
}

// FromStreamValue converts a stream record's attribute value back into an SDK
// attribute value, so that attributevalue.UnmarshalMap (and UnmarshalDevice)
// can decode a stream image. An unknown data type wraps fleet.ErrInvalid.
func FromStreamValue(av events.DynamoDBAttributeValue) (types.AttributeValue, error) {
	switch av.DataType() {
	case events.DataTypeString:
		return &types.AttributeValueMemberS{Value: av.String()}, nil
	case events.DataTypeNumber:
		return &types.AttributeValueMemberN{Value: av.Number()}, nil
	case events.DataTypeBinary:
		return &types.AttributeValueMemberB{Value: bytes.Clone(av.Binary())}, nil
	case events.DataTypeBoolean:
		return &types.AttributeValueMemberBOOL{Value: av.Boolean()}, nil
	case events.DataTypeNull:
		return &types.AttributeValueMemberNULL{Value: true}, nil
	case events.DataTypeStringSet:
		return &types.AttributeValueMemberSS{Value: slices.Clone(av.StringSet())}, nil
	case events.DataTypeNumberSet:
		return &types.AttributeValueMemberNS{Value: slices.Clone(av.NumberSet())}, nil
	case events.DataTypeBinarySet:
		bs := make([][]byte, len(av.BinarySet()))
		for i, b := range av.BinarySet() {
			bs[i] = bytes.Clone(b)
		}
		return &types.AttributeValueMemberBS{Value: bs}, nil
	case events.DataTypeList:
		l := make([]types.AttributeValue, len(av.List()))
		for i, e := range av.List() {
			c, err := FromStreamValue(e)
			if err != nil {
				return nil, fmt.Errorf("list element %d: %w", i, err)
			}
			l[i] = c
		}
		return &types.AttributeValueMemberL{Value: l}, nil
	case events.DataTypeMap:
		m, err := FromStreamImage(av.Map())
		if err != nil {
			return nil, err
		}
		if m == nil {
			m = map[string]types.AttributeValue{}
		}
		return &types.AttributeValueMemberM{Value: m}, nil
	default:
		return nil, fmt.Errorf("stream attribute value of data type %d: %w", av.DataType(), fleet.ErrInvalid)
	}
}

// FromStreamImage converts a stream record image into an item. A nil image
// gives a nil item.
func FromStreamImage(img map[string]events.DynamoDBAttributeValue) (map[string]types.AttributeValue, error) {
	if img == nil {
		return nil, nil
	}
	out := make(map[string]types.AttributeValue, len(img))
	for k, v := range img {
		c, err := FromStreamValue(v)
		if err != nil {
			return nil, fmt.Errorf("attribute %s: %w", k, err)
		}
		out[k] = c
	}
	return out, nil
}

// DeviceFromStreamImage decodes an inventory stream image (NewImage or
// OldImage of a record). A malformed image wraps fleet.ErrInvalid.
func DeviceFromStreamImage(img map[string]events.DynamoDBAttributeValue) (fleet.Device, error) {
	item, err := FromStreamImage(img)
	if err != nil {
		return fleet.Device{}, fmt.Errorf("device stream image: %w", err)
	}
	if item == nil {
		return fleet.Device{}, fmt.Errorf("device stream image: empty: %w", fleet.ErrInvalid)
	}
	return UnmarshalDevice(item)
}
