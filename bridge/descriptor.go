package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// ReadDescriptorSet reads a FileDescriptorSet, as `buf build -o api.binpb`
// or `protoc --include_imports -o` write it, and returns every service in
// it. The set must include the imports of its files.
func ReadDescriptorSet(path string) ([]protoreflect.ServiceDescriptor, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bridge: %w", err)
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("bridge: %s is not a descriptor set: %w", path, err)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		return nil, fmt.Errorf("bridge: %s: %w", path, err)
	}
	var services []protoreflect.ServiceDescriptor
	files.RangeFiles(func(f protoreflect.FileDescriptor) bool {
		for i := range f.Services().Len() {
			services = append(services, f.Services().Get(i))
		}
		return true
	})
	sortServices(services)
	return services, nil
}

const (
	reflectionV1      = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
	reflectionV1Alpha = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
)

// Reflect asks the backend on cc for its services by gRPC server reflection
// (v1, or v1alpha when the backend has only that) and returns every service
// it lists except the reflection services themselves.
func Reflect(ctx context.Context, cc grpc.ClientConnInterface) ([]protoreflect.ServiceDescriptor, error) {
	services, err := reflect(ctx, cc, reflectionV1)
	if status.Code(err) == codes.Unimplemented {
		// v1alpha has the same messages on the wire: only the method differs.
		services, err = reflect(ctx, cc, reflectionV1Alpha)
	}
	if err != nil {
		return nil, fmt.Errorf("bridge: server reflection: %w", err)
	}
	return services, nil
}

func reflect(ctx context.Context, cc grpc.ClientConnInterface, method string) ([]protoreflect.ServiceDescriptor, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, method)
	if err != nil {
		return nil, err
	}
	ask := func(req *reflectionpb.ServerReflectionRequest) (*reflectionpb.ServerReflectionResponse, error) {
		if err := stream.SendMsg(req); err != nil {
			if errors.Is(err, io.EOF) {
				// The stream ended: RecvMsg has the status.
				var res reflectionpb.ServerReflectionResponse
				return nil, stream.RecvMsg(&res)
			}
			return nil, err
		}
		var res reflectionpb.ServerReflectionResponse
		if err := stream.RecvMsg(&res); err != nil {
			return nil, err
		}
		if e := res.GetErrorResponse(); e != nil {
			return nil, status.Error(codes.Code(e.GetErrorCode()), e.GetErrorMessage())
		}
		return &res, nil
	}

	res, err := ask(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	})
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range res.GetListServicesResponse().GetService() {
		switch s.GetName() {
		case "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection":
			continue
		}
		names = append(names, s.GetName())
	}

	// Collect the files that define the services, then any import the
	// server did not send along.
	got := map[string]*descriptorpb.FileDescriptorProto{}
	add := func(res *reflectionpb.ServerReflectionResponse) error {
		for _, b := range res.GetFileDescriptorResponse().GetFileDescriptorProto() {
			fd := new(descriptorpb.FileDescriptorProto)
			if err := proto.Unmarshal(b, fd); err != nil {
				return fmt.Errorf("bad file descriptor: %w", err)
			}
			got[fd.GetName()] = fd
		}
		return nil
	}
	for _, name := range names {
		res, err := ask(&reflectionpb.ServerReflectionRequest{
			MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: name},
		})
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", name, err)
		}
		if err := add(res); err != nil {
			return nil, err
		}
	}
	for {
		var missing []string
		for _, fd := range got {
			for _, dep := range fd.GetDependency() {
				if got[dep] == nil {
					missing = append(missing, dep)
				}
			}
		}
		if len(missing) == 0 {
			break
		}
		for _, dep := range missing {
			if got[dep] != nil {
				continue
			}
			res, err := ask(&reflectionpb.ServerReflectionRequest{
				MessageRequest: &reflectionpb.ServerReflectionRequest_FileByFilename{FileByFilename: dep},
			})
			if err != nil {
				return nil, fmt.Errorf("file %s: %w", dep, err)
			}
			if err := add(res); err != nil {
				return nil, err
			}
			if got[dep] == nil {
				return nil, fmt.Errorf("file %s: the server did not send it", dep)
			}
		}
	}
	_ = stream.CloseSend()

	set := &descriptorpb.FileDescriptorSet{}
	for _, fd := range got {
		set.File = append(set.File, fd)
	}
	files, err := protodesc.NewFiles(set)
	if err != nil {
		return nil, err
	}
	return findServices(files, names)
}

func findServices(files *protoregistry.Files, names []string) ([]protoreflect.ServiceDescriptor, error) {
	services := make([]protoreflect.ServiceDescriptor, 0, len(names))
	for _, name := range names {
		d, err := files.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", name, err)
		}
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			return nil, fmt.Errorf("%s is not a service", name)
		}
		services = append(services, sd)
	}
	sortServices(services)
	return services, nil
}

func sortServices(s []protoreflect.ServiceDescriptor) {
	sort.Slice(s, func(i, j int) bool { return s[i].FullName() < s[j].FullName() })
}
