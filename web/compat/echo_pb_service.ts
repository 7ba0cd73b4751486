// The examples.echo.v1.EchoService in the shape that ts-protoc-gen
// generates for @improbable-eng/grpc-web (and that nice-grpc-web accepts):
// a class whose static members describe the methods, and message classes
// with serializeBinary and a static deserializeBinary, as google-protobuf's
// generated classes have. ts-protoc-gen needs google-protobuf's own code
// generator, which npm does not ship, so the message classes wrap
// protobuf-es messages (web/src/gen) instead: on the wire they are the same
// bytes.

import { create, fromBinary, toBinary, type DescMessage, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import {
  BidiRequestSchema,
  BidiResponseSchema,
  EchoRequestSchema,
  EchoResponseSchema,
  TickerRequestSchema,
  TickerResponseSchema,
  UploadRequestSchema,
  UploadResponseSchema,
} from "../src/gen/examples/echo/v1/echo_pb.js";

/** A google-protobuf style class around a protobuf-es message. */
export interface JspbMessage<D extends DescMessage> {
  msg: MessageShape<D>;
  serializeBinary(): Uint8Array;
  toObject(): {};
}

export interface JspbClass<D extends DescMessage> {
  new (init?: MessageInitShape<D>): JspbMessage<D>;
  deserializeBinary(bytes: Uint8Array): JspbMessage<D>;
}

function jspb<D extends DescMessage>(schema: D): JspbClass<D> {
  // deserializeBinary is called detached from the class (nice-grpc-web
  // does), as google-protobuf's static one may be: it must not use this.
  const cls = class {
    msg: MessageShape<D>;
    constructor(init?: MessageInitShape<D>) {
      this.msg = create(schema, init);
    }
    static deserializeBinary(bytes: Uint8Array) {
      const m = new cls();
      m.msg = fromBinary(schema, bytes);
      return m;
    }
    serializeBinary(): Uint8Array {
      return toBinary(schema, this.msg);
    }
    toObject(): {} {
      return this.msg;
    }
  };
  return cls;
}

export const EchoRequest = jspb(EchoRequestSchema);
export const EchoResponse = jspb(EchoResponseSchema);
export const TickerRequest = jspb(TickerRequestSchema);
export const TickerResponse = jspb(TickerResponseSchema);
export const UploadRequest = jspb(UploadRequestSchema);
export const UploadResponse = jspb(UploadResponseSchema);
export const BidiRequest = jspb(BidiRequestSchema);
export const BidiResponse = jspb(BidiResponseSchema);

const service = { serviceName: "examples.echo.v1.EchoService" };

function method<Req extends DescMessage, Res extends DescMessage, CS extends boolean, SS extends boolean>(
  methodName: string,
  requestStream: CS,
  responseStream: SS,
  requestType: JspbClass<Req>,
  responseType: JspbClass<Res>,
) {
  return { methodName, service, requestStream, responseStream, requestType, responseType };
}

/** As ts-protoc-gen writes it: EchoService.Echo is a method descriptor. */
export class EchoService {
  static readonly serviceName = service.serviceName;
  static readonly Echo = method("Echo", false, false, EchoRequest, EchoResponse);
  static readonly Ticker = method("Ticker", false, true, TickerRequest, TickerResponse);
  static readonly Upload = method("Upload", true, false, UploadRequest, UploadResponse);
  static readonly Bidi = method("Bidi", true, true, BidiRequest, BidiResponse);
  /** Not a method of the service: the bridge answers UNIMPLEMENTED. */
  static readonly Nope = method("Nope", false, false, EchoRequest, EchoResponse);
}
